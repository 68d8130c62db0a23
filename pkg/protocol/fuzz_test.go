package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// Native fuzz tests. Without -fuzz, `go test` runs every f.Add seed below (and
// any crasher saved under testdata/fuzz/<FuzzName>/) as a normal test. To fuzz:
//
//	go test -run '^$' -fuzz FuzzFrameReader -fuzztime 60s ./pkg/protocol

// The byte examples of protocol.md section 5, spelled out so they can seed the
// corpora (TestFuzzSeedsMatchProtocolDoc checks them against the doc strings
// of protocol_test.go).
var (
	sec5HeartbeatRequest = slices.Concat(
		[]byte{0x17, 0x00, 0x00, 0x00}, []byte{0x0c}, []byte("@Heart@Beat@"),
		[]byte{0x00, 0x00}, []byte{0xd2, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00})
	sec5HeartbeatReply = slices.Concat(
		[]byte{0x1d, 0x00, 0x00, 0x00}, []byte{0x0c}, []byte("@Heart@Beat@"),
		[]byte{0x00, 0x00}, []byte{0xd2, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
		[]byte{0x00, 0x00}, []byte{0x00, 0x00, 0x00, 0x00})
	sec5EchoRequest = slices.Concat(
		[]byte{0x1c, 0x00, 0x00, 0x00}, []byte{0x0b}, []byte("EchoRequest"),
		[]byte{0x01, 0x00}, []byte{0xd2, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
		[]byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07})
)

func TestFuzzSeedsMatchProtocolDoc(t *testing.T) {
	for _, tc := range []struct {
		name      string
		seed, doc []byte
	}{
		{"heartbeat request", sec5HeartbeatRequest, unhex(t, exHeartbeatRequest)},
		{"heartbeat reply", sec5HeartbeatReply, unhex(t, exHeartbeatReply)},
		{"echo request", sec5EchoRequest, unhex(t, exEchoRequest)},
	} {
		if !bytes.Equal(tc.seed, tc.doc) {
			t.Errorf("%s seed\n got %x\nwant %x", tc.name, tc.seed, tc.doc)
		}
	}
}

// lengthPrefix returns a frame prefix claiming n body bytes.
func lengthPrefix(n int32) []byte {
	return binary.LittleEndian.AppendUint32(nil, uint32(n))
}

// rawFrame returns a prefix claiming n bytes followed by body (which may be shorter or longer).
func rawFrame(n int32, body []byte) []byte {
	return append(lengthPrefix(n), body...)
}

// fuzzMax maps FuzzFrameReader's selector to a MaxPacketSize in 1..8192, so the
// limit is small enough for the fuzzer to reach and straddles the reader's
// initial buffer. Selector 1023 is the 1 KiB limit most seeds use.
func fuzzMax(sel uint16) int { return 1 + int(sel)%8192 }

const sel1KiB = 1023

// chunkReader hands out data in pieces that end at the given cut offsets
// (ascending), never crossing one, and, when stall is set, returns (0, nil)
// before each piece, which io.Reader allows.
type chunkReader struct {
	data    []byte
	cuts    []int
	off     int
	stall   bool
	stalled bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if r.stall && !r.stalled {
		r.stalled = true
		return 0, nil
	}
	r.stalled = false
	end := len(r.data)
	for _, c := range r.cuts {
		if c > r.off {
			end = min(end, c)
			break
		}
	}
	n := copy(p, r.data[r.off:end])
	r.off += n
	return n, nil
}

// errClass names the terminal error of a frame stream; anything else fails the test.
func errClass(t *testing.T, err error) string {
	t.Helper()
	switch {
	case err == io.EOF:
		return "EOF"
	case err == io.ErrUnexpectedEOF:
		return "UnexpectedEOF"
	case errors.Is(err, ErrFrameTooLarge):
		return "FrameTooLarge"
	case errors.Is(err, ErrMalformedFrame):
		return "MalformedFrame"
	}
	t.Fatalf("unexpected frame reader error %v", err)
	return ""
}

// drainFrames reads every frame from r, checking the reader's memory bounds
// after each Next, and returns copies of the bodies and the terminal error.
func drainFrames(t *testing.T, how string, r io.Reader, maxSize int) ([][]byte, error) {
	t.Helper()
	fr := NewFrameReader(r, maxSize)
	limit := max(initialReadBuffer, maxSize+LengthSize)
	var frames [][]byte
	for {
		body, err := fr.Next()
		if len(fr.buf) > limit || cap(fr.buf) > limit {
			t.Fatalf("%s: read buffer len %d cap %d exceeds max(%d, MaxPacketSize %d + %d)",
				how, len(fr.buf), cap(fr.buf), initialReadBuffer, maxSize, LengthSize)
		}
		if err != nil {
			if (errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrMalformedFrame)) && len(fr.buf) > initialReadBuffer {
				t.Fatalf("%s: %v, yet the read buffer grew to %d", how, err, len(fr.buf))
			}
			if _, again := fr.Next(); again != err {
				t.Fatalf("%s: error not sticky: %v then %v", how, err, again)
			}
			return frames, err
		}
		if len(body) == 0 || len(body) > maxSize {
			t.Fatalf("%s: body of %d bytes with MaxPacketSize %d", how, len(body), maxSize)
		}
		// The buffer only grows past its initial size to hold exactly the frame it returns.
		if len(fr.buf) > initialReadBuffer && len(fr.buf) != LengthSize+len(body) {
			t.Fatalf("%s: read buffer of %d bytes for a %d-byte frame", how, len(fr.buf), len(body))
		}
		frames = append(frames, bytes.Clone(body))
	}
}

func FuzzFrameReader(f *testing.F) {
	hb, echo, reply := sec5HeartbeatRequest, sec5EchoRequest, sec5HeartbeatReply
	all3 := slices.Concat(hb, echo, reply)
	body1KiB := bytes.Repeat([]byte{0x5a}, 1024)
	body5000 := bytes.Repeat([]byte{0xa5}, 5000)
	manyEchoes := bytes.Repeat(echo, 200) // 6400 bytes: frames straddle the 4 KiB buffer
	seeds := []struct {
		data       []byte
		sel        uint16
		cut1, cut2 uint16
	}{
		// protocol.md section 5, alone and concatenated.
		{hb, sel1KiB, 4, 5},
		{echo, sel1KiB, 2, 20},
		{reply, sel1KiB, 0, 0},
		{all3, sel1KiB, uint16(len(hb)), uint16(len(hb) + len(echo))},
		{all3, sel1KiB, uint16(len(hb) - 1), uint16(len(hb) + 3)},
		{manyEchoes, sel1KiB, 4096, 4100},
		// Edge lengths: empty input, 0, -1, MaxPacketSize, MaxPacketSize+1.
		{nil, sel1KiB, 0, 0},
		{lengthPrefix(0), sel1KiB, 1, 2},
		{slices.Concat(lengthPrefix(0), echo), sel1KiB, 0, 0},
		{slices.Concat(echo, lengthPrefix(0), echo), sel1KiB, 0, 0},
		{lengthPrefix(-1), sel1KiB, 3, 0},
		{slices.Concat(hb, lengthPrefix(-1), body1KiB), sel1KiB, 0, 0},
		{lengthPrefix(math.MinInt32), sel1KiB, 0, 0},
		{rawFrame(1024, body1KiB), sel1KiB, 100, 1000},
		{slices.Concat(rawFrame(1024, body1KiB), echo), sel1KiB, 1028, 1029},
		{rawFrame(1025, append(body1KiB, 1)), sel1KiB, 0, 0},
		{slices.Concat(echo, rawFrame(1025, append(body1KiB, 1))), sel1KiB, 0, 0},
		{lengthPrefix(DefaultMaxPacketSize), sel1KiB, 0, 0},
		{lengthPrefix(DefaultMaxPacketSize + 1), sel1KiB, 0, 0},
		{lengthPrefix(math.MaxInt32), sel1KiB, 0, 0},
		{rawFrame(1, []byte{1}), 0, 0, 0}, // MaxPacketSize 1
		{rawFrame(2, []byte{1, 2}), 0, 0, 0},
		// Frames larger than the initial 4 KiB buffer: growth, then shrink for the next frame.
		{rawFrame(5000, body5000), 4999, 4092, 4097},
		{slices.Concat(rawFrame(5000, body5000), echo, rawFrame(5000, body5000)), 4999, 5003, 5004},
		{rawFrame(5001, append(body5000, 1)), 4999, 0, 0},
		{rawFrame(8192, bytes.Repeat([]byte{3}, 8192)), 8191, 4096, 8000},
		{rawFrame(5000, body5000[:4000]), 4999, 0, 0}, // truncated large frame
		// Truncated frames: inside the prefix, at its end, inside the body.
		{echo[:1], sel1KiB, 0, 0},
		{echo[:3], sel1KiB, 1, 2},
		{echo[:4], sel1KiB, 0, 0},
		{echo[:len(echo)-1], sel1KiB, 5, 6},
		{slices.Concat(hb, echo[:10]), sel1KiB, 27, 0},
		{slices.Concat(hb, echo, []byte{0x1c}), sel1KiB, 0, 0},
		{rawFrame(1024, body1KiB[:1023]), sel1KiB, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s.data, s.sel, s.cut1, s.cut2)
	}
	f.Fuzz(func(t *testing.T, data []byte, sel, cut1, cut2 uint16) {
		maxSize := fuzzMax(sel)
		cuts := []int{int(cut1) % (len(data) + 1), int(cut2) % (len(data) + 1)}
		slices.Sort(cuts)

		want, wantErr := drainFrames(t, "whole", bytes.NewReader(data), maxSize)
		wantClass := errClass(t, wantErr)
		for _, rd := range []struct {
			how string
			r   io.Reader
		}{
			{"one byte at a time", iotest.OneByteReader(bytes.NewReader(data))},
			{"EOF with the last data", iotest.DataErrReader(bytes.NewReader(data))},
			{"split", &chunkReader{data: data, cuts: cuts}},
			{"split, stalling", &chunkReader{data: data, cuts: cuts, stall: true}},
		} {
			got, err := drainFrames(t, rd.how, rd.r, maxSize)
			if class := errClass(t, err); class != wantClass {
				t.Fatalf("%s (cuts %v): stream ends with %s (%v), read whole it ends with %s (%v)",
					rd.how, cuts, class, err, wantClass, wantErr)
			}
			if !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("%s (cuts %v): %d frames differ from the %d read whole", rd.how, cuts, len(got), len(want))
			}
		}

		// SplitFrames (one WebSocket message) must agree with the stream reader.
		var split [][]byte
		serr := SplitFrames(data, maxSize, func(body []byte) error {
			split = append(split, body)
			return nil
		})
		if !slices.EqualFunc(split, want, bytes.Equal) {
			t.Fatalf("SplitFrames gave %d frames, FrameReader %d", len(split), len(want))
		}
		switch wantClass {
		case "EOF":
			if len(data) == 0 && !errors.Is(serr, ErrMalformedFrame) {
				t.Fatalf("SplitFrames accepted an empty message: %v", serr)
			}
			if len(data) > 0 && serr != nil {
				t.Fatalf("SplitFrames: %v on a stream of whole frames", serr)
			}
		case "UnexpectedEOF", "MalformedFrame":
			if !errors.Is(serr, ErrMalformedFrame) {
				t.Fatalf("SplitFrames: %v, want ErrMalformedFrame (stream: %v)", serr, wantErr)
			}
		case "FrameTooLarge":
			if !errors.Is(serr, ErrFrameTooLarge) {
				t.Fatalf("SplitFrames: %v, want ErrFrameTooLarge", serr)
			}
		}
	})
}

func FuzzRequestHeader(f *testing.F) {
	echoPayload := []byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07}
	full := func(h Header, msgID string, payload []byte) []byte {
		frame, err := AppendFull(nil, h, msgID, payload)
		if err != nil {
			f.Fatal(err)
		}
		return frame[LengthSize:]
	}
	long := strings.Repeat("m", MaxMsgIDLen)
	bodies := [][]byte{
		sec5HeartbeatRequest[LengthSize:],
		sec5EchoRequest[LengthSize:],
		sec5HeartbeatReply[LengthSize:],
		nil,
		{0},
		make([]byte, compactFixed-1),
		make([]byte, compactFixed),             // MsgIdLen 0
		make([]byte, fullFixed),                // MsgIdLen 0, long enough for a full header
		{1, 'X', 0, 0, 0, 0, 0, 0, 0, 0, 0},    // one byte short of a compact header
		{1, 'X', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // shortest compact header
		{5, 'a', 'b', 0, 0, 0, 0, 0, 0, 0, 0},  // MsgIdLen past the end
		slices.Concat([]byte{255}, []byte(long), make([]byte, 10)),
		slices.Concat([]byte{255}, []byte(long), make([]byte, 10+6)),
		full(Header{MsgSeq: 9, StageID: -1, ErrorCode: InternalError, OriginalSize: 1600}, "BigRequest", []byte{0xff}),
		full(Header{OriginalSize: -1}, "X", nil),
		full(Header{OriginalSize: math.MaxInt32, ErrorCode: 65535}, long, echoPayload),
	}
	for _, body := range bodies {
		f.Add(body, "EchoRequest", uint16(1), int64(1234), uint16(0), int32(0), echoPayload)
	}
	fields := []struct {
		msgID   string
		seq     uint16
		stage   int64
		code    uint16
		orig    int32
		payload []byte
	}{
		{"@Heart@Beat@", 0, 1234, 0, 0, nil},
		{"EchoRequest", 1, 1234, 0, 0, echoPayload},
		{"AuthenticateRequest", 65535, math.MinInt64, uint16(AuthenticationFailed), 0, []byte(`{"token":"x"}`)},
		{"", 1, 1, 0, 0, nil},
		{long, 2, math.MaxInt64, 65535, math.MaxInt32, []byte{0}},
		{long + "m", 3, 0, 0, 0, nil},
		{"X", 0, -1, 1000, -1, nil},
		{"X", 0, 0, 0, math.MinInt32, nil},
		{"日本語", 7, 7, 7, 7, []byte("payload")},
	}
	for _, fl := range fields {
		f.Add(sec5EchoRequest[LengthSize:], fl.msgID, fl.seq, fl.stage, fl.code, fl.orig, fl.payload)
	}
	f.Fuzz(func(t *testing.T, body []byte, msgID string, seq uint16, stage int64, code uint16, orig int32, payload []byte) {
		checkParseArbitrary(t, body)
		checkHeaderRoundTrip(t, msgID, seq, stage, code, orig, payload)
	})
}

// checkParseArbitrary: parsing arbitrary bytes either fails with
// ErrMalformedHeader or yields a header whose re-encoding is exactly the input.
func checkParseArbitrary(t *testing.T, body []byte) {
	type result struct {
		h       Header
		payload []byte
		err     error
	}
	var res [2]result
	for i, format := range []HeaderFormat{CompactHeader, FullHeader} {
		h, payload, err := ParseRequest(body, format)
		res[i] = result{h, payload, err}
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("format %d: ParseRequest(%x) = %v, want ErrMalformedHeader", format, body, err)
			}
			continue
		}
		if len(payload) > len(body) {
			t.Fatalf("format %d: MsgID %q payload %d bytes from a %d-byte body", format, h.MsgID, len(payload), len(body))
		}
		if len(payload) > 0 && &payload[0] != &body[len(body)-len(payload)] {
			t.Fatalf("format %d: payload does not alias the body's tail", format)
		}
		var frame []byte
		if format == CompactHeader {
			if h.ErrorCode != 0 || h.OriginalSize != 0 {
				t.Fatalf("compact header decoded with ErrorCode %d OriginalSize %d", h.ErrorCode, h.OriginalSize)
			}
			if len(h.MsgID) == 0 {
				// AppendRequest refuses an empty MsgId (valid on the wire):
				// encode it by hand.
				frame = binary.LittleEndian.AppendUint32(nil, uint32(compactFixed+len(payload)))
				frame = append(frame, 0)
				frame = binary.LittleEndian.AppendUint16(frame, h.MsgSeq)
				frame = binary.LittleEndian.AppendUint64(frame, uint64(h.StageID))
				frame = append(frame, payload...)
			} else {
				frame, err = AppendRequest(nil, string(h.MsgID), h.MsgSeq, h.StageID, payload)
			}
		} else {
			if h.OriginalSize < 0 {
				t.Fatalf("full header accepted OriginalSize %d", h.OriginalSize)
			}
			frame, err = AppendFull(nil, h, string(h.MsgID), payload)
		}
		if err != nil {
			t.Fatalf("format %d: re-encoding %+v: %v", format, h, err)
		}
		if got := binary.LittleEndian.Uint32(frame); got != uint32(len(body)) {
			t.Fatalf("format %d: re-encoded length prefix %d, body is %d bytes", format, got, len(body))
		}
		if !bytes.Equal(frame[LengthSize:], body) {
			t.Fatalf("format %d: re-encoding differs\n got %x\nwant %x", format, frame[LengthSize:], body)
		}
	}
	// The full layout extends the compact one: whatever parses as full parses as compact with the same prefix fields.
	if c, fu := res[0], res[1]; fu.err == nil {
		if c.err != nil || !bytes.Equal(c.h.MsgID, fu.h.MsgID) || c.h.MsgSeq != fu.h.MsgSeq || c.h.StageID != fu.h.StageID {
			t.Fatalf("full header %+v parses as compact %+v, %v", fu.h, c.h, c.err)
		}
	}
	// A response is parsed exactly like a full request, except that it must
	// have a MsgId.
	h, payload, err := ParseResponse(body)
	if res[1].err == nil && len(res[1].h.MsgID) == 0 {
		if !errors.Is(err, ErrMalformedHeader) {
			t.Fatalf("response with an empty MsgId: %v, want ErrMalformedHeader", err)
		}
		return
	}
	if (err == nil) != (res[1].err == nil) || !bytes.Equal(payload, res[1].payload) ||
		!bytes.Equal(h.MsgID, res[1].h.MsgID) || h.MsgSeq != res[1].h.MsgSeq || h.StageID != res[1].h.StageID ||
		h.ErrorCode != res[1].h.ErrorCode || h.OriginalSize != res[1].h.OriginalSize {
		t.Fatalf("ParseResponse = %+v, %v; ParseRequest(full) = %+v, %v", h, err, res[1].h, res[1].err)
	}
}

// checkHeaderRoundTrip: encoding valid fields and parsing them back is lossless;
// invalid MsgIds are refused without touching dst.
func checkHeaderRoundTrip(t *testing.T, msgID string, seq uint16, stage int64, code uint16, orig int32, payload []byte) {
	valid := len(msgID) <= MaxMsgIDLen // AppendFull; AppendRequest also refuses ""
	prefix := []byte{0xEE}             // frames are appended after existing bytes
	same := func(what string, h Header, p []byte, wantCode uint16, wantOrig int32) {
		t.Helper()
		if string(h.MsgID) != msgID || h.MsgSeq != seq || h.StageID != stage || uint16(h.ErrorCode) != wantCode ||
			h.OriginalSize != wantOrig || !bytes.Equal(p, payload) {
			t.Fatalf("%s: decoded %+v payload %x from MsgId %q seq %d stage %d code %d orig %d payload %x",
				what, h, p, msgID, seq, stage, wantCode, wantOrig, payload)
		}
	}
	frameOf := func(what string, out []byte, err error) []byte {
		t.Helper()
		if !valid {
			if !errors.Is(err, ErrMalformedHeader) || !bytes.Equal(out, prefix) {
				t.Fatalf("%s with a %d-byte MsgId: %v, dst %x", what, len(msgID), err, out)
			}
			return nil
		}
		if err != nil || len(out) < len(prefix)+LengthSize || out[0] != prefix[0] {
			t.Fatalf("%s: %v", what, err)
		}
		frame := out[len(prefix):]
		if n := binary.LittleEndian.Uint32(frame); int(n) != len(frame)-LengthSize {
			t.Fatalf("%s: length prefix %d for a %d-byte body", what, n, len(frame)-LengthSize)
		}
		return frame
	}

	out, err := AppendRequest(slices.Clone(prefix), msgID, seq, stage, payload)
	if msgID == "" {
		if !errors.Is(err, ErrMalformedHeader) || !bytes.Equal(out, prefix) {
			t.Fatalf("AppendRequest with an empty MsgId: %v, dst %x", err, out)
		}
	} else if frame := frameOf("AppendRequest", out, err); frame != nil {
		if len(frame) != LengthSize+compactFixed+len(msgID)+len(payload) {
			t.Fatalf("compact frame of %d bytes", len(frame))
		}
		h, p, err := ParseRequest(frame[LengthSize:], CompactHeader)
		if err != nil {
			t.Fatalf("ParseRequest(AppendRequest(...)): %v", err)
		}
		same("compact", h, p, 0, 0)
	}

	hdr := Header{MsgSeq: seq, StageID: stage, ErrorCode: ErrorCode(code), OriginalSize: orig}
	out, err = AppendFull(slices.Clone(prefix), hdr, msgID, payload)
	if frame := frameOf("AppendFull", out, err); frame != nil {
		if len(frame) != ResponseSize(len(msgID), len(payload)) {
			t.Fatalf("full frame of %d bytes, ResponseSize says %d", len(frame), ResponseSize(len(msgID), len(payload)))
		}
		for _, what := range []string{"full request", "response"} {
			var h Header
			var p []byte
			if what == "response" {
				h, p, err = ParseResponse(frame[LengthSize:])
			} else {
				h, p, err = ParseRequest(frame[LengthSize:], FullHeader)
			}
			if orig < 0 || (what == "response" && msgID == "") {
				if !errors.Is(err, ErrMalformedHeader) {
					t.Fatalf("%s with OriginalSize %d, MsgId %q: %v, want ErrMalformedHeader", what, orig, msgID, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: parse of our own encoding: %v", what, err)
			}
			same(what, h, p, code, orig)
		}
	}
}

// lz4FuzzMax is the MaxPacketSize FuzzLZ4Payload decompresses against.
const lz4FuzzMax = 64 << 10

// allocBytes reports the heap bytes f allocates. It is the least of up to three
// measurements, stopping early once one is at most limit, because another
// goroutine of the test binary may allocate during a measurement.
func allocBytes(limit uint64, f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
		if least <= limit {
			break
		}
	}
	return least
}

// smallAlloc is what an error return may allocate (the fmt.Errorf value).
const smallAlloc = 1 << 10

func FuzzLZ4Payload(f *testing.F) {
	text := bytes.Repeat([]byte("hello playhouse "), 100) // 1600 bytes
	var c Compressor
	textBlock, _ := c.Compress(text)
	textBlock = bytes.Clone(textBlock)
	zeros := make([]byte, lz4FuzzMax)
	zerosBlock, _ := c.Compress(zeros)
	zerosBlock = bytes.Clone(zerosBlock)
	literals := append([]byte{0x50}, "hello"...) // one sequence of 5 literals, no match
	seeds := []struct {
		block     []byte
		orig      int
		threshold uint16
	}{
		{textBlock, len(text), 512},
		{textBlock, len(text) - 1, 0},
		{textBlock, len(text) + 1, 0},
		{textBlock[:len(textBlock)-1], len(text), 0},
		{textBlock[:len(textBlock)/2], len(text), 0},
		{textBlock, 0, 0},
		{textBlock, -1, 0},
		{textBlock, math.MaxInt, 0},
		{textBlock, math.MinInt, 0},
		{zerosBlock, lz4FuzzMax, 0},
		{zerosBlock, lz4FuzzMax + 1, 0},
		{zerosBlock, lz4FuzzMax - 1, 0},
		{literals, 5, 0},
		{literals, 4, 1},
		{literals, 6, 5},
		{[]byte{0x00}, 1, 0},
		{[]byte{0xff}, 255 + 16, 0},
		{[]byte{0xff}, 255 + 16 + 1, 0}, // past the 255x expansion guard
		{[]byte{0xff, 0xff, 0xff}, 1000, 0},
		{[]byte{0xff, 0xff, 0xff}, 60000, 0},   // a large claim the guard rejects before allocating
		{literals, lz4FuzzMax, 0},              // a large claim for a small block
		{literals, len(literals)*255 + 16, 0},  // allowed by the guard, allocates, then fails
		{bytes.Repeat([]byte("a"), 20), 20, 0}, // LZ4 saves only 5%: sent raw
		{nil, 0, 0},
		{nil, 1, 0},
		{sec5EchoRequest[LengthSize+compactFixed+len("EchoRequest"):], 6, 0},
		{sec5HeartbeatReply, len(sec5HeartbeatReply), 0},
		{text, 1 << 20, 1},
	}
	for _, s := range seeds {
		f.Add(s.block, s.orig, s.threshold)
	}
	f.Fuzz(func(t *testing.T, block []byte, originalSize int, threshold uint16) {
		checkDecompressArbitrary(t, block, originalSize)
		checkCompressRoundTrip(t, block, int(threshold))
	})
}

// checkDecompressArbitrary: an arbitrary block and size either fail with
// ErrBadCompression or give exactly originalSize bytes, never allocating more
// than the limit, and nothing large for a claim rejected up front.
func checkDecompressArbitrary(t *testing.T, block []byte, originalSize int) {
	var out []byte
	var err error
	decompress := func() { out, err = DecompressPayload(nil, block, originalSize, lz4FuzzMax) }
	precheckRejects := originalSize <= 0 || originalSize > lz4FuzzMax || len(block) == 0 ||
		originalSize > len(block)*255+16
	if originalSize > smallAlloc {
		// A claimed size worth measuring: a rejected claim allocates only its
		// error, any other at most originalSize (≤ max) rounded up to the
		// allocator's size class or page, plus the error.
		limit := uint64(smallAlloc)
		if !precheckRejects {
			limit += uint64(originalSize) + 8<<10
		}
		if n := allocBytes(limit, decompress); n > limit {
			t.Fatalf("DecompressPayload(%d-byte block, %d) allocated %d bytes, limit %d (err %v)",
				len(block), originalSize, n, limit, err)
		}
	} else {
		decompress()
	}
	if err != nil {
		if !errors.Is(err, ErrBadCompression) || out != nil {
			t.Fatalf("DecompressPayload(%x, %d) = %d bytes, %v; want nil, ErrBadCompression", block, originalSize, len(out), err)
		}
		return
	}
	if precheckRejects {
		t.Fatalf("DecompressPayload(%d-byte block, %d) succeeded past its bounds", len(block), originalSize)
	}
	if len(out) != originalSize || cap(out) > lz4FuzzMax {
		t.Fatalf("DecompressPayload(%x, %d) = len %d cap %d (max %d)", block, originalSize, len(out), cap(out), lz4FuzzMax)
	}
	// Into a reused buffer full of stale bytes: same result, in place.
	dst := bytes.Repeat([]byte{0xAA}, originalSize)[:0]
	again, err := DecompressPayload(dst, block, originalSize, lz4FuzzMax)
	if err != nil || !bytes.Equal(again, out) || &again[0] != &dst[:1][0] {
		t.Fatalf("DecompressPayload into a reused buffer: %v, equal %v", err, bytes.Equal(again, out))
	}
}

// checkCompressRoundTrip: the Compressor's output, when it compresses, obeys
// the policy and decompresses to the input, even with a Compressor reused
// from a different payload.
func checkCompressRoundTrip(t *testing.T, data []byte, threshold int) {
	c := Compressor{Threshold: threshold}
	warm := bytes.Repeat([]byte("warm the compressor state "), 40)
	if enc, orig := c.Compress(warm); orig > 0 {
		if dec, err := DecompressPayload(nil, enc, int(orig), len(warm)); err != nil || !bytes.Equal(dec, warm) {
			t.Fatalf("warm-up round trip: %v", err)
		}
	}
	enc, orig := c.Compress(data)
	if orig == 0 {
		if !bytes.Equal(enc, data) {
			t.Fatal("uncompressed result differs from the payload")
		}
		return
	}
	if int(orig) != len(data) || len(data) < threshold || len(enc) > len(data)*9/10 {
		t.Fatalf("compressed %d bytes (threshold %d) to %d, OriginalSize %d", len(data), threshold, len(enc), orig)
	}
	dec, err := DecompressPayload(nil, enc, int(orig), len(data))
	if err != nil || !bytes.Equal(dec, data) {
		t.Fatalf("round trip of %d bytes: %v", len(data), err)
	}
}
