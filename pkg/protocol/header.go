package protocol

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Header sizes, without the MsgId bytes.
const (
	// compactFixed is MsgIdLen + MsgSeq + StageId.
	compactFixed = 1 + 2 + 8
	// fullFixed adds ErrorCode + OriginalSize.
	fullFixed = compactFixed + 2 + 4
	// MaxMsgIDLen is the longest MsgId (its length is one byte).
	MaxMsgIDLen = 255
)

// HeaderFormat selects the request header layout.
type HeaderFormat uint8

const (
	// CompactHeader is MsgIdLen, MsgId, MsgSeq, StageId (the official connectors).
	CompactHeader HeaderFormat = iota
	// FullHeader adds ErrorCode and OriginalSize, allowing LZ4 request payloads.
	FullHeader
)

// Header is a decoded packet header. MsgID aliases the decoded buffer.
type Header struct {
	// MsgID is the message name.
	MsgID []byte
	// MsgSeq is 0 for one-way packets and pushes, else the request sequence.
	MsgSeq uint16
	// StageID names the stage; 0 is none.
	StageID int64
	// ErrorCode is the response status (always 0 in a compact request).
	ErrorCode ErrorCode
	// OriginalSize is 0 for a raw payload, else the LZ4 block's decompressed size.
	OriginalSize int32
}

// ParseRequest decodes a request body in the given format. The payload is
// returned as sent: when h.OriginalSize > 0 it is an LZ4 block (see
// DecompressPayload). Errors wrap ErrMalformedHeader.
func ParseRequest(body []byte, format HeaderFormat) (h Header, payload []byte, err error) {
	if format == FullHeader {
		return parseFull(body, "request")
	}
	h, n, err := parseCommon(body, compactFixed, "request")
	if err != nil {
		return Header{}, nil, err
	}
	return h, body[compactFixed+n:], nil
}

// ParseResponse decodes a response or push body (always the full layout).
// Unlike a request, a response must have a MsgId: the engine only sends an
// empty one in answer to a request with an empty MsgId, which the Go client
// (AppendRequest) never sends, so to it an empty MsgId means a broken stream.
func ParseResponse(body []byte) (h Header, payload []byte, err error) {
	h, payload, err = parseFull(body, "response")
	if err == nil && len(h.MsgID) == 0 {
		return Header{}, nil, fmt.Errorf("%w: empty MsgId in a response", ErrMalformedHeader)
	}
	return h, payload, err
}

func parseFull(body []byte, what string) (h Header, payload []byte, err error) {
	h, n, err := parseCommon(body, fullFixed, what)
	if err != nil {
		return Header{}, nil, err
	}
	h.ErrorCode = ErrorCode(binary.LittleEndian.Uint16(body[11+n:]))
	h.OriginalSize = int32(binary.LittleEndian.Uint32(body[13+n:]))
	if h.OriginalSize < 0 {
		return Header{}, nil, fmt.Errorf("%w: negative OriginalSize %d", ErrMalformedHeader, h.OriginalSize)
	}
	return h, body[fullFixed+n:], nil
}

// parseCommon decodes the fields every layout starts with (MsgIdLen, MsgId,
// MsgSeq, StageId) from a body whose header is fixed bytes plus the MsgId,
// and returns the MsgId length.
func parseCommon(body []byte, fixed int, what string) (h Header, n int, err error) {
	if len(body) < fixed {
		return Header{}, 0, fmt.Errorf("%w: %s body of %d bytes is shorter than a header", ErrMalformedHeader, what, len(body))
	}
	// MsgIdLen 0 is valid (protocol.md section 2): the official server hands
	// an empty MsgId to the application, and so does the engine.
	n = int(body[0])
	if len(body) < fixed+n {
		return Header{}, 0, fmt.Errorf("%w: MsgIdLen %d exceeds the body", ErrMalformedHeader, n)
	}
	h.MsgID = body[1 : 1+n]
	h.MsgSeq = binary.LittleEndian.Uint16(body[1+n:])
	h.StageID = int64(binary.LittleEndian.Uint64(body[3+n:]))
	return h, n, nil
}

func checkMsgID(msgID string) error {
	if len(msgID) > MaxMsgIDLen {
		return fmt.Errorf("%w: MsgId length %d not in 0..%d", ErrMalformedHeader, len(msgID), MaxMsgIDLen)
	}
	return nil
}

// AppendRequest appends a whole frame (length prefix included) holding a
// compact request to dst. It refuses an empty MsgId: the wire allows one (an
// official connector's edge case the engine answers), but a client built on
// this package has no reason to send it.
func AppendRequest(dst []byte, msgID string, msgSeq uint16, stageID int64, payload []byte) ([]byte, error) {
	if msgID == "" {
		return dst, fmt.Errorf("%w: empty MsgId", ErrMalformedHeader)
	}
	if err := checkMsgID(msgID); err != nil {
		return dst, err
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(compactFixed+len(msgID)+len(payload)))
	dst = append(dst, byte(len(msgID)))
	dst = append(dst, msgID...)
	dst = binary.LittleEndian.AppendUint16(dst, msgSeq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(stageID))
	return append(dst, payload...), nil
}

// AppendFull appends a whole frame holding a full header (the response layout,
// also the "full" request layout) to dst. payload must already be compressed
// when originalSize > 0. An empty MsgId is allowed (the answer to a request
// with an empty MsgId).
func AppendFull(dst []byte, h Header, msgID string, payload []byte) ([]byte, error) {
	if err := checkMsgID(msgID); err != nil {
		return dst, err
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(fullFixed+len(msgID)+len(payload)))
	dst = append(dst, byte(len(msgID)))
	dst = append(dst, msgID...)
	dst = binary.LittleEndian.AppendUint16(dst, h.MsgSeq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.StageID))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(h.ErrorCode))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.OriginalSize))
	return append(dst, payload...), nil
}

// ResponseSize is the frame size (length prefix included) of a response with
// the given MsgId and raw payload lengths.
func ResponseSize(msgIDLen, payloadLen int) int {
	return LengthSize + fullFixed + msgIDLen + payloadLen
}

// ReplyMsgID derives a reply's MsgId from its request's as the official
// server does: every "Request" becomes "Reply" ("EchoRequest" becomes
// "EchoReply", "RequestRequest" becomes "ReplyReply"); a name without
// "Request" is returned unchanged.
func ReplyMsgID(requestMsgID string) string {
	return strings.ReplaceAll(requestMsgID, "Request", "Reply")
}
