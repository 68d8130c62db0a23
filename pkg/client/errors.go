package client

import (
	"errors"
	"fmt"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

var (
	// ErrClosed is the cause (Err) of a connection ended by Close.
	ErrClosed = errors.New("playhouse client: closed")
	// ErrTooManyInFlight is returned by Request when every MsgSeq (1..65535)
	// belongs to a request still waiting for its reply.
	ErrTooManyInFlight = errors.New("playhouse client: all request sequence numbers are in flight")
	// ErrPacketTooLarge is returned when an outgoing frame body would exceed
	// Options.MaxPacketSize. Nothing is sent and the connection stays open.
	ErrPacketTooLarge = errors.New("playhouse client: packet too large")
	// ErrResumeFailed is wrapped by the cause (Err, and the Err of the
	// EventResumeFailed event) of a connection that could not follow a drain:
	// the reconnect token was refused (the error also wraps an
	// *ErrorCodeError with Code AuthenticationFailed), or every one of
	// Options.ResumeAttempts failed (it wraps the last failure).
	ErrResumeFailed = errors.New("playhouse client: resume after drain failed")
	// ErrDrainedConnTimeout fails the requests still unanswered on a drained
	// connection that the server had not closed Options.DrainedConnTimeout
	// after the resume. They may have been handled, so they are not resent.
	ErrDrainedConnTimeout = errors.New("playhouse client: drained connection not closed by the server in time")
)

// ErrorCodeError reports a reply whose ErrorCode is not Success.
type ErrorCodeError struct {
	// MsgID is the reply's MsgId.
	MsgID string
	// Code is the reply's ErrorCode.
	Code protocol.ErrorCode
}

// Error describes the reply and its code.
func (e *ErrorCodeError) Error() string {
	return fmt.Sprintf("playhouse client: %s failed with ErrorCode %d (%s)", e.MsgID, uint16(e.Code), e.Code)
}

// Is reports whether target is an *ErrorCodeError with the same Code (MsgID is
// ignored), so errors.Is(err, &ErrorCodeError{Code: protocol.AuthenticationFailed}) works.
func (e *ErrorCodeError) Is(target error) bool {
	t, ok := target.(*ErrorCodeError)
	return ok && t.Code == e.Code
}
