// Package protocol implements the PlayHouse client wire format: length-prefixed
// frames, the compact and full request headers, the response header, LZ4 block
// payloads and the framework error codes (see shared/protocol.md).
//
// Everything here is a pure function or type over bytes: no sockets, no
// goroutines, no global mutable state. Decoded views ([]byte fields) alias the
// input buffer and are valid only until that buffer is reused.
package protocol
