package session

// Manager returns the manager the session belongs to, so a handler can reach
// other sessions (Broadcast to a stage, ByAccount) without being given the
// manager after construction.
func (s *Session) Manager() *Manager { return s.m }
