package protocol

import (
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// DecompressPayload decodes an LZ4 block whose decompressed size must be exactly
// originalSize, which must be in 1..maxSize. It checks the bound before
// allocating, and reuses dst when it is large enough. Errors wrap
// ErrBadCompression.
func DecompressPayload(dst, src []byte, originalSize, maxSize int) ([]byte, error) {
	if originalSize <= 0 || originalSize > maxSize {
		return nil, fmt.Errorf("%w: OriginalSize %d not in 1..%d", ErrBadCompression, originalSize, maxSize)
	}
	// An LZ4 block expands at most about 255x; reject impossible claims before
	// allocating for them.
	if len(src) == 0 || originalSize > len(src)*255+16 {
		return nil, fmt.Errorf("%w: %d bytes cannot expand to %d", ErrBadCompression, len(src), originalSize)
	}
	if cap(dst) < originalSize {
		dst = make([]byte, originalSize)
	}
	dst = dst[:originalSize]
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCompression, err)
	}
	if n != originalSize {
		return nil, fmt.Errorf("%w: decompressed %d bytes, OriginalSize says %d", ErrBadCompression, n, originalSize)
	}
	return dst, nil
}

// Compressor applies the outbound compression policy: payloads of at least
// Threshold bytes are LZ4-compressed when the result saves at least 10%.
// A Compressor is not safe for concurrent use; keep one per writer or pool them.
type Compressor struct {
	// Threshold is the smallest payload worth compressing.
	Threshold int
	c         lz4.Compressor
	scratch   []byte
}

// Compress returns the bytes to send and the OriginalSize header value: either
// (payload, 0) unchanged, or (block, len(payload)). The block aliases the
// Compressor's scratch buffer and is valid until the next call.
func (c *Compressor) Compress(payload []byte) ([]byte, int32) {
	if len(payload) == 0 || len(payload) < c.Threshold {
		return payload, 0
	}
	bound := lz4.CompressBlockBound(len(payload))
	if cap(c.scratch) < bound {
		c.scratch = make([]byte, bound)
	}
	out := c.scratch[:bound]
	n, err := c.c.CompressBlock(payload, out)
	if err != nil || n == 0 || n > len(payload)*9/10 {
		return payload, 0
	}
	return out[:n], int32(len(payload))
}
