package server

import "time"

// CertExpiry exposes the expiry metric's source to the external tests.
func CertExpiry(s *Server) time.Time { return s.certExpiry() }
