//go:build !linux

package transport

import (
	"syscall"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// canPump: sockets are read through net.Conn here.
const canPump = false

// sockReader is never used where sockets are not read directly.
type sockReader struct{ fd int32 }

func (r *sockReader) start(bool) {}

// Read implements io.Reader.
func (r *sockReader) Read([]byte) (int, error) { return 0, protocol.ErrWouldBlock }

// shutdownSocket is never called where sockets are not read directly.
func shutdownSocket(syscall.RawConn) {}
