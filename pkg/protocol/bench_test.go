package protocol

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// Benchmarks of the per-packet work of a session (results: docs/benchmarks.md):
//
//	go test -run '^$' -bench . -benchmem ./pkg/protocol

// benchPayload is the 32-byte payload of the benchmark EchoRequests.
var benchPayload = []byte("0123456789abcdef0123456789abcdef")

// echoFrames returns n EchoRequest frames with a 32-byte payload, back to back.
func echoFrames(tb testing.TB, n int) []byte {
	tb.Helper()
	var out []byte
	for i := range n {
		var err error
		out, err = AppendRequest(out, "EchoRequest", uint16(i%65535+1), 1234, benchPayload)
		if err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// loopReader serves an endless repetition of block, giving each Read as much
// as it asks for up to the end of the block (a socket with data always ready).
type loopReader struct {
	block []byte
	off   int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.block[r.off:])
	r.off += n
	if r.off == len(r.block) {
		r.off = 0
	}
	return n, nil
}

// hotPath is the per-frame work of a TCP session: read a frame, parse its
// compact header, append the reply into a reused output buffer.
type hotPath struct {
	fr      *FrameReader
	out     []byte
	replies map[string]string // request MsgId -> reply MsgId, computed once
	frames  int
}

func newHotPath(tb testing.TB) *hotPath {
	fr := NewFrameReader(&loopReader{block: echoFrames(tb, 1000)}, DefaultMaxPacketSize)
	fr.SetBudget(NewBudget(256 << 20)) // as servers run it
	fr.SetBufferPool(NewBufferPool(0))
	return &hotPath{
		fr:      fr,
		replies: map[string]string{"EchoRequest": ReplyMsgID("EchoRequest")},
	}
}

func (hp *hotPath) step() error {
	body, err := hp.fr.Next()
	if err != nil {
		return err
	}
	h, payload, err := ParseRequest(body, CompactHeader)
	if err != nil {
		return err
	}
	reply, ok := hp.replies[string(h.MsgID)]
	if !ok {
		return fmt.Errorf("no reply for %q", h.MsgID)
	}
	hp.out, err = AppendFull(hp.out[:0], Header{MsgSeq: h.MsgSeq, StageID: h.StageID}, reply, payload)
	hp.frames++
	return err
}

// TestHotPathZeroAlloc: once warm, the per-frame path allocates nothing. It
// counts every allocation over all runs (totalAllocs, strict where
// testing.AllocsPerRun rounds down), so it is deterministic; the counts are
// the same with -race and -cover, so it runs under both.
func TestHotPathZeroAlloc(t *testing.T) {
	hp := newHotPath(t)
	for range 2000 { // warm up: the read and output buffers are allocated once
		if err := hp.step(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := totalAllocs(5000, func() {
		if err := hp.step(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("read+parse+append allocated %d times in 5000 frames, want 0", allocs)
	}
	if want := ResponseSize(len("EchoReply"), len(benchPayload)); len(hp.out) != want {
		t.Errorf("reply frame of %d bytes, want %d", len(hp.out), want)
	}

	// The payload paths with reused buffers are allocation-free too.
	payload := compressible4KiB()
	var c Compressor
	c.Compress(payload)
	block, orig := c.Compress(payload)
	if orig == 0 {
		t.Fatal("4 KiB payload not compressed")
	}
	if allocs := totalAllocs(100, func() { c.Compress(payload) }); allocs != 0 {
		t.Errorf("Compressor.Compress allocated %d times in 100 calls, want 0", allocs)
	}
	dst := make([]byte, len(payload))
	if allocs := totalAllocs(100, func() {
		if _, err := DecompressPayload(dst, block, int(orig), DefaultMaxPacketSize); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("DecompressPayload into a reused buffer allocated %d times in 100 calls, want 0", allocs)
	}
}

// totalAllocs runs fn n times and returns the total number of heap
// allocations, strictly (testing.AllocsPerRun rounds the average down).
func totalAllocs(n int, fn func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fn()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		fn()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

func BenchmarkFrameReaderSmallFrames(b *testing.B) {
	block := echoFrames(b, 1000)
	fr := NewFrameReader(&loopReader{block: block}, DefaultMaxPacketSize)
	b.SetBytes(int64(len(block) / 1000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRequestCompact(b *testing.B) {
	body := echoFrames(b, 1)[LengthSize:]
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseRequest(body, CompactHeader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendFullReused(b *testing.B) {
	h := Header{MsgSeq: 1, StageID: 1234}
	out := make([]byte, 0, 256)
	b.SetBytes(int64(ResponseSize(len("EchoReply"), len(benchPayload))))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = AppendFull(out[:0], h, "EchoReply", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHotPath is read frame + parse header + append reply, per frame.
func BenchmarkHotPath(b *testing.B) {
	hp := newHotPath(b)
	b.SetBytes(int64(len(echoFrames(b, 1))))
	b.ReportAllocs()
	for b.Loop() {
		if err := hp.step(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSplitFrames splits one WebSocket message of 64 frames per op (ns/frame is per frame).
func BenchmarkSplitFrames(b *testing.B) {
	msg := echoFrames(b, 64)
	fn := func([]byte) error { return nil }
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := SplitFrames(msg, DefaultMaxPacketSize, fn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/frame")
}

// compressible4KiB is a 4 KiB JSON-like payload with repetition and variation,
// roughly what a game state push looks like.
func compressible4KiB() []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < 4096; i++ {
		fmt.Fprintf(&buf, `{"id":%d,"name":"player-%03d","x":%d,"y":%d,"hp":100,"state":"idle"},`, i, i%97, i*37%1000, i*91%1000)
	}
	return buf.Bytes()[:4096]
}

func BenchmarkCompressor4KiB(b *testing.B) {
	payload := compressible4KiB()
	c := Compressor{Threshold: 512}
	out, orig := c.Compress(payload)
	if orig == 0 {
		b.Fatal("payload not compressed")
	}
	ratio := float64(len(out)) / float64(len(payload))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		c.Compress(payload)
	}
	b.ReportMetric(ratio, "out/in")
}

func BenchmarkDecompressPayload4KiB(b *testing.B) {
	payload := compressible4KiB()
	var c Compressor
	block, orig := c.Compress(payload)
	block = bytes.Clone(block)
	dst := make([]byte, len(payload))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecompressPayload(dst, block, int(orig), DefaultMaxPacketSize); err != nil {
			b.Fatal(err)
		}
	}
}
