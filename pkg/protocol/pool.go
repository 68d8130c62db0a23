package protocol

import "sync"

// BufferPool is a bounded free list of 4 KiB read buffers shared by the
// FrameReaders of many connections: a reader borrows one only while bytes are
// buffered, so idle connections hold none. It keeps at most a fixed number
// of free buffers; more are left to the garbage collector. Unlike sync.Pool
// it never drops a buffer behind the caller's back, so a warm reader
// allocates nothing. A nil *BufferPool allocates every buffer. It is safe
// for concurrent use.
type BufferPool struct {
	mu   sync.Mutex
	free [][]byte
	max  int
}

// PooledBufferSize is the size of a BufferPool's buffers.
const PooledBufferSize = initialReadBuffer

// DefaultPooledReadBuffers is how many free buffers a pool from
// NewBufferPool(0) keeps (1 MiB).
const DefaultPooledReadBuffers = 256

// NewBufferPool returns a pool keeping at most maxFree free buffers (<= 0:
// DefaultPooledReadBuffers).
func NewBufferPool(maxFree int) *BufferPool {
	if maxFree <= 0 {
		maxFree = DefaultPooledReadBuffers
	}
	return &BufferPool{max: maxFree}
}

// Get returns a 4 KiB buffer.
func (p *BufferPool) Get() []byte {
	if p != nil {
		p.mu.Lock()
		if n := len(p.free); n > 0 {
			b := p.free[n-1]
			p.free[n-1] = nil
			p.free = p.free[:n-1]
			p.mu.Unlock()
			return b
		}
		p.mu.Unlock()
	}
	return make([]byte, initialReadBuffer)
}

// Put returns a buffer from Get; the caller must not use it afterwards.
func (p *BufferPool) Put(b []byte) {
	if p == nil || len(b) != initialReadBuffer {
		return
	}
	p.mu.Lock()
	if len(p.free) < p.max {
		p.free = append(p.free, b)
	}
	p.mu.Unlock()
}

// Free reports how many free buffers the pool holds.
func (p *BufferPool) Free() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}
