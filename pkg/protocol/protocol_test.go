package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

// unhex decodes the byte examples of protocol.md section 5, where quoted ASCII
// stands for its bytes and "|" separates fields.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var out []byte
	for _, field := range strings.Split(s, "|") {
		field = strings.TrimSpace(field)
		for field != "" {
			if field[0] == '"' {
				end := strings.IndexByte(field[1:], '"')
				out = append(out, field[1:1+end]...)
				field = strings.TrimSpace(field[end+2:])
				continue
			}
			tok, rest, _ := strings.Cut(field, " ")
			b, err := hex.DecodeString(tok)
			if err != nil {
				t.Fatalf("bad hex %q: %v", tok, err)
			}
			out = append(out, b...)
			field = strings.TrimSpace(rest)
		}
	}
	return out
}

// The byte examples of protocol.md section 5, verbatim.
const (
	exHeartbeatRequest = `17 00 00 00 | 0c "@Heart@Beat@" | 00 00 | d2 04 00 00 00 00 00 00`
	exHeartbeatReply   = `1d 00 00 00 | 0c "@Heart@Beat@" | 00 00 | d2 04 00 00 00 00 00 00 | 00 00 | 00 00 00 00`
	exEchoRequest      = `1c 00 00 00 | 0b "EchoRequest" | 01 00 | d2 04 00 00 00 00 00 00 | 0a 02 68 69 10 07`
)

func TestByteExamplesDecode(t *testing.T) {
	fr := NewFrameReader(bytes.NewReader(append(unhex(t, exHeartbeatRequest), unhex(t, exEchoRequest)...)), DefaultMaxPacketSize)
	body, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	h, payload, err := ParseRequest(body, CompactHeader)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.MsgID) != "@Heart@Beat@" || h.MsgSeq != 0 || h.StageID != 1234 || len(payload) != 0 {
		t.Errorf("heartbeat decoded as %+v payload %x", h, payload)
	}
	body, err = fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	h, payload, err = ParseRequest(body, CompactHeader)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.MsgID) != "EchoRequest" || h.MsgSeq != 1 || h.StageID != 1234 || !bytes.Equal(payload, []byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07}) {
		t.Errorf("echo decoded as %+v payload %x", h, payload)
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("end of stream: got %v, want io.EOF", err)
	}
}

func TestByteExamplesEncode(t *testing.T) {
	got, err := AppendRequest(nil, "@Heart@Beat@", 0, 1234, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, exHeartbeatRequest); !bytes.Equal(got, want) {
		t.Errorf("heartbeat request\n got %x\nwant %x", got, want)
	}
	got, err = AppendFull(nil, Header{StageID: 1234}, "@Heart@Beat@", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, exHeartbeatReply); !bytes.Equal(got, want) {
		t.Errorf("heartbeat reply\n got %x\nwant %x", got, want)
	}
	if n := ResponseSize(len("@Heart@Beat@"), 0); n != len(got) {
		t.Errorf("ResponseSize = %d, frame is %d", n, len(got))
	}
	got, err = AppendRequest(nil, "EchoRequest", 1, 1234, []byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07})
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, exEchoRequest); !bytes.Equal(got, want) {
		t.Errorf("echo request\n got %x\nwant %x", got, want)
	}
	// The heartbeat reply decodes back to the same header.
	h, payload, err := ParseResponse(unhex(t, exHeartbeatReply)[LengthSize:])
	if err != nil || string(h.MsgID) != "@Heart@Beat@" || h.StageID != 1234 || h.ErrorCode != 0 || h.OriginalSize != 0 || len(payload) != 0 {
		t.Errorf("heartbeat reply decoded as %+v, %x, %v", h, payload, err)
	}
}

func TestFrameReaderRejectsBadLengths(t *testing.T) {
	cases := []struct {
		name   string
		prefix []byte
		want   error
	}{
		{"zero", []byte{0, 0, 0, 0}, ErrMalformedFrame},
		{"negative", []byte{0xff, 0xff, 0xff, 0xff}, ErrMalformedFrame},
		{"too large", []byte{0x01, 0x00, 0x20, 0x00}, ErrFrameTooLarge}, // 2 MiB + 1
		{"huge", []byte{0xff, 0xff, 0xff, 0x7f}, ErrFrameTooLarge},
	}
	for _, tc := range cases {
		fr := NewFrameReader(bytes.NewReader(tc.prefix), DefaultMaxPacketSize)
		if _, err := fr.Next(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if len(fr.buf) > initialReadBuffer {
			t.Errorf("%s: buffer grew to %d for a rejected length", tc.name, len(fr.buf))
		}
	}
}

func TestFrameReaderMaxSizeExactly(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 100)
	fr := NewFrameReader(bytes.NewReader(AppendFrame(nil, body)), 100)
	got, err := fr.Next()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("frame of exactly MaxPacketSize: %v", err)
	}
	fr = NewFrameReader(bytes.NewReader(AppendFrame(nil, append(body, 1))), 100)
	if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame of MaxPacketSize+1: %v", err)
	}
}

func TestFrameReaderTruncated(t *testing.T) {
	frame := unhex(t, exEchoRequest)
	for cut := 1; cut < len(frame); cut++ {
		fr := NewFrameReader(bytes.NewReader(frame[:cut]), DefaultMaxPacketSize)
		if _, err := fr.Next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestParseRequestMalformed(t *testing.T) {
	for _, body := range [][]byte{
		{},
		{0, 0, 0, 0, 0, 0, 0, 0, 0, 0},           // one byte short of a header with MsgIdLen 0
		{5, 'a', 'b', 0, 0, 0, 0, 0, 0, 0, 0, 0}, // MsgIdLen past the end
	} {
		if _, _, err := ParseRequest(body, CompactHeader); !errors.Is(err, ErrMalformedHeader) {
			t.Errorf("ParseRequest(%x) = %v, want ErrMalformedHeader", body, err)
		}
		if _, _, err := ParseRequest(body, FullHeader); !errors.Is(err, ErrMalformedHeader) {
			t.Errorf("ParseRequest(full, %x) = %v, want ErrMalformedHeader", body, err)
		}
	}
	// Negative OriginalSize in a full header.
	frame, _ := AppendFull(nil, Header{OriginalSize: -1}, "X", nil)
	if _, _, err := ParseRequest(frame[LengthSize:], FullHeader); !errors.Is(err, ErrMalformedHeader) {
		t.Errorf("negative OriginalSize: %v", err)
	}
	// MsgIdLen 0 is valid (protocol.md section 2).
	if h, _, err := ParseRequest([]byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0}, CompactHeader); err != nil || len(h.MsgID) != 0 || h.MsgSeq != 3 {
		t.Errorf("MsgIdLen 0: %+v, %v", h, err)
	}
	if f, err := AppendFull(nil, Header{MsgSeq: 3}, "", nil); err != nil || len(f) != LengthSize+fullFixed {
		t.Errorf("AppendFull with an empty MsgId: %x, %v", f, err)
	} else if _, _, err := ParseRequest(f[LengthSize:], FullHeader); err != nil {
		t.Errorf("full request with an empty MsgId: %v", err)
	} else if _, _, err := ParseResponse(f[LengthSize:]); !errors.Is(err, ErrMalformedHeader) {
		t.Errorf("response with an empty MsgId: %v, want ErrMalformedHeader", err)
	}
	if _, err := AppendRequest(nil, "", 1, 0, nil); !errors.Is(err, ErrMalformedHeader) {
		t.Errorf("AppendRequest with an empty MsgId: %v", err)
	}
	if _, err := AppendRequest(nil, strings.Repeat("x", 256), 0, 0, nil); err == nil {
		t.Error("AppendRequest accepted a 256-byte MsgId")
	}
}

func TestFullRequestWithLZ4(t *testing.T) {
	payload := bytes.Repeat([]byte("hello playhouse "), 100)
	c := Compressor{Threshold: 512}
	block, orig := c.Compress(payload)
	if orig != int32(len(payload)) || len(block) >= len(payload) {
		t.Fatalf("compressible payload not compressed: orig=%d len=%d", orig, len(block))
	}
	frame, err := AppendFull(nil, Header{MsgSeq: 9, StageID: 3, OriginalSize: orig}, "BigRequest", block)
	if err != nil {
		t.Fatal(err)
	}
	h, p, err := ParseRequest(frame[LengthSize:], FullHeader)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecompressPayload(nil, p, int(h.OriginalSize), DefaultMaxPacketSize)
	if err != nil || !bytes.Equal(out, payload) {
		t.Fatalf("round trip failed: %v", err)
	}
	// Wrong stated size, oversize, garbage.
	if _, err := DecompressPayload(nil, p, len(payload)+1, DefaultMaxPacketSize); !errors.Is(err, ErrBadCompression) {
		t.Errorf("wrong OriginalSize accepted: %v", err)
	}
	if _, err := DecompressPayload(nil, p, DefaultMaxPacketSize+1, DefaultMaxPacketSize); !errors.Is(err, ErrBadCompression) {
		t.Errorf("OriginalSize over max accepted: %v", err)
	}
	if _, err := DecompressPayload(nil, []byte{0xff, 0xff, 0xff}, 1000, DefaultMaxPacketSize); !errors.Is(err, ErrBadCompression) {
		t.Errorf("garbage accepted: %v", err)
	}
}

func TestCompressorPolicy(t *testing.T) {
	c := Compressor{Threshold: 512}
	small := bytes.Repeat([]byte{1}, 511)
	if out, orig := c.Compress(small); orig != 0 || !bytes.Equal(out, small) {
		t.Error("payload under the threshold was compressed")
	}
	random := make([]byte, 4096)
	x := uint32(1)
	for i := range random {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		random[i] = byte(x)
	}
	if _, orig := c.Compress(random); orig != 0 {
		t.Error("incompressible payload was compressed")
	}
}

func TestLZ4ExpansionBound(t *testing.T) {
	// The most compressible input must still pass the expansion-ratio guard.
	payload := make([]byte, DefaultMaxPacketSize)
	c := Compressor{}
	block, orig := c.Compress(payload)
	if orig == 0 {
		t.Fatal("zeros not compressed")
	}
	if _, err := DecompressPayload(nil, block, int(orig), DefaultMaxPacketSize); err != nil {
		t.Fatalf("max-ratio block rejected (%d -> %d): %v", len(payload), len(block), err)
	}
}

func TestSplitFrames(t *testing.T) {
	a := unhex(t, exHeartbeatRequest)
	b := unhex(t, exEchoRequest)
	var got [][]byte
	if err := SplitFrames(append(append([]byte{}, a...), b...), DefaultMaxPacketSize, func(body []byte) error {
		got = append(got, body)
		return nil
	}); err != nil || len(got) != 2 {
		t.Fatalf("SplitFrames: %v, %d frames", err, len(got))
	}
	for _, bad := range [][]byte{nil, a[:len(a)-1], append(append([]byte{}, a...), 1, 2)} {
		if err := SplitFrames(bad, DefaultMaxPacketSize, func([]byte) error { return nil }); !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("SplitFrames(%x) = %v, want ErrMalformedFrame", bad, err)
		}
	}
}

func TestReplyMsgID(t *testing.T) {
	for in, want := range map[string]string{
		"EchoRequest":         "EchoReply",
		"AuthenticateRequest": "AuthenticateReply",
		"Ping":                "Ping",
		"RequestStatus":       "ReplyStatus",
		"RequestRequest":      "ReplyReply",
		"GetRequestRequestX":  "GetReplyReplyX",
		"":                    "",
	} {
		if got := ReplyMsgID(in); got != want {
			t.Errorf("ReplyMsgID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorCodeString(t *testing.T) {
	if RateLimitExceeded.String() != "RateLimitExceeded" || ErrorCode(1001).String() != "Application(1001)" || ErrorCode(500).String() != "ErrorCode(500)" {
		t.Error("ErrorCode.String")
	}
}

// TestFrameReaderGrowsWithReceivedData: memory follows the bytes received,
// not the length claimed.
func TestFrameReaderGrowsWithReceivedData(t *testing.T) {
	// A peer claims a 2 MiB frame but sends only 10 KiB: the reader must not
	// have allocated the claimed size.
	claim := AppendFrame(nil, make([]byte, DefaultMaxPacketSize))
	fr := NewFrameReader(bytes.NewReader(claim[:LengthSize+10<<10]), DefaultMaxPacketSize)
	if _, err := fr.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated big frame: %v", err)
	}
	if len(fr.buf) > 2*(LengthSize+10<<10) {
		t.Fatalf("buffer is %d bytes after receiving %d", len(fr.buf), LengthSize+10<<10)
	}
	// The whole frame still arrives intact, in small reads.
	fr = NewFrameReader(iotestHalfReader{bytes.NewReader(claim)}, DefaultMaxPacketSize)
	body, err := fr.Next()
	if err != nil || len(body) != DefaultMaxPacketSize {
		t.Fatalf("big frame: %d bytes, %v", len(body), err)
	}
}

// iotestHalfReader returns at most 1000 bytes per Read.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	if len(p) > 1000 {
		p = p[:1000]
	}
	return h.r.Read(p)
}
