package session

// limiterTokens reports the packet tokens available.
func (s *Session) limiterTokens() float64 {
	if s.limiter == nil {
		return 0
	}
	return s.limiter.Tokens()
}
