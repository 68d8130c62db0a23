package transport

import (
	"encoding/binary"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// The WebSocket write path. Each outbound frame is one binary message
// (the official connectors expect that), and a batch of frames goes out as
// consecutive messages in as few socket writes as possible: the messages are
// encoded by wsConn itself (a server's frames are unmasked and uncompressed,
// so a message is a 2, 4 or 10-byte header and the frame), not one library
// call and one write per message. The library still writes the control
// frames (ping, pong, close); progressConn's lock keeps every frame whole.

var _ DirectWriter = (*wsConn)(nil)

// wsHeaderMax is the largest header of an unmasked message.
const wsHeaderMax = 10

// appendMessageHeader appends the header of a final, unmasked binary
// message of n bytes.
func appendMessageHeader(dst []byte, n int) []byte {
	const finBinary = 0x80 | websocket.BinaryMessage
	switch {
	case n < 126:
		return append(dst, finBinary, byte(n))
	case n <= 0xFFFF:
		return append(dst, finBinary, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, finBinary, 127), uint64(n))
	}
}

// nextFrame splits the first whole frame (prefix included) off b.
func nextFrame(b []byte) (frame, rest []byte, err error) {
	if len(b) < protocol.LengthSize {
		return nil, nil, fmt.Errorf("write: %w: %d trailing bytes", protocol.ErrMalformedFrame, len(b))
	}
	n := protocol.LengthSize + int(binary.LittleEndian.Uint32(b))
	if n > len(b) {
		return nil, nil, fmt.Errorf("write: %w: frame of %d bytes, %d left", protocol.ErrMalformedFrame, n, len(b))
	}
	return b[:n], b[n:], nil
}

// encodeMessages encodes the frames of b as messages into dst when they all
// fit in its capacity; ok is false (and dst unchanged) when they do not.
func encodeMessages(dst, b []byte) (out []byte, ok bool, err error) {
	out = dst
	for len(b) > 0 {
		frame, rest, err := nextFrame(b)
		if err != nil {
			return dst, false, err
		}
		if len(out)+wsHeaderMax+len(frame) > cap(out) {
			return dst, false, nil
		}
		out = append(appendMessageHeader(out, len(frame)), frame...)
		b = rest
	}
	return out, true, nil
}

// WriteFrames writes each frame of b as one binary message.
func (c *wsConn) WriteFrames(b []byte) error {
	c.pc.mu.Lock()
	defer c.pc.mu.Unlock()
	return c.writeLocked(b)
}

// TryWriteFrames implements DirectWriter: on plain TCP, when no control
// frame is being written, the messages of a batch that fits in a pooled
// buffer go out with one non-blocking write. Anything else is left.
func (c *wsConn) TryWriteFrames(b []byte) (bool, error) {
	c.restFrames = b
	if c.raw == nil || !c.pc.mu.TryLock() {
		return true, nil
	}
	defer c.pc.mu.Unlock()
	if c.closeSent.Load() {
		return true, nil // FlushRest reports it
	}
	buf := c.pool.Get()
	enc, ok, err := encodeMessages(buf[:0], b)
	if !ok {
		c.pool.Put(buf)
		return true, err
	}
	n, err := writeNow(c.raw, enc)
	if n < len(enc) {
		c.scratch, c.rest = buf, enc[n:]
		c.restFrames = nil
		return true, err
	}
	c.pool.Put(buf)
	c.restFrames = nil
	return false, nil
}

// FlushRest implements DirectWriter.
func (c *wsConn) FlushRest() error {
	c.pc.mu.Lock()
	defer c.pc.mu.Unlock()
	rest, frames, scratch := c.rest, c.restFrames, c.scratch
	c.rest, c.restFrames, c.scratch = nil, nil, nil
	defer func() {
		if scratch != nil {
			c.pool.Put(scratch)
		}
	}()
	if len(rest) > 0 {
		if _, err := c.pc.w.Write(rest); err != nil {
			return fmt.Errorf("write websocket messages: %w", err)
		}
		if err := c.pc.w.renew(); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
	}
	return c.writeLocked(frames)
}

// writeLocked writes the frames of b as messages, holding c.pc.mu: they are
// gathered in a pooled buffer and written when it is full; a frame too large
// for it goes out as its header and itself. Every write after the first
// renews the no-progress deadline.
func (c *wsConn) writeLocked(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if c.closeSent.Load() {
		return fmt.Errorf("write websocket message: %w", websocket.ErrCloseSent)
	}
	buf := c.pool.Get()
	defer c.pool.Put(buf)
	out := buf[:0]
	wrote := false
	write := func(p []byte) error {
		if wrote {
			if err := c.pc.w.renew(); err != nil {
				return fmt.Errorf("set write deadline: %w", err)
			}
		}
		wrote = true
		if _, err := c.pc.w.Write(p); err != nil {
			return fmt.Errorf("write websocket message: %w", err)
		}
		return nil
	}
	for len(b) > 0 {
		frame, rest, err := nextFrame(b)
		if err != nil {
			return err
		}
		b = rest
		if len(out)+wsHeaderMax+len(frame) <= cap(out) {
			out = append(appendMessageHeader(out, len(frame)), frame...)
			continue
		}
		if len(out) > 0 {
			if err := write(out); err != nil {
				return err
			}
			out = out[:0]
		}
		if wsHeaderMax+len(frame) <= cap(out) {
			out = append(appendMessageHeader(out, len(frame)), frame...)
			continue
		}
		if err := write(appendMessageHeader(out, len(frame))); err != nil {
			return err
		}
		if err := write(frame); err != nil {
			return err
		}
	}
	if len(out) > 0 {
		return write(out)
	}
	return nil
}
