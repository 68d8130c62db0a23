package session

import (
	"net"
	"net/netip"
	"time"
)

// maxAuthFailureEntries bounds the per-IP failed-authentication table; when
// it is full and nothing has expired, further addresses are not tracked.
const maxAuthFailureEntries = 100_000

// authFailures is the per-IP failed-authentication budget, guarded by
// Manager.mu.
type authFailures struct {
	m map[netip.Prefix]*ipFailures
}

// ipFailures counts one address's failures in the current window.
type ipFailures struct {
	count       int
	windowStart time.Time
	coolUntil   time.Time
}

// expired reports whether the entry holds nothing worth keeping at now.
func (f *ipFailures) expired(now time.Time, window time.Duration) bool {
	return !now.Before(f.coolUntil) && now.Sub(f.windowStart) >= window
}

// coolingDownLocked reports whether key is in its cool-down; m.mu is held.
func (m *Manager) coolingDownLocked(key netip.Prefix) bool {
	f := m.authFail.m[key]
	if f == nil {
		return false
	}
	now := time.Now()
	if f.expired(now, m.opts.AuthFailureWindow) {
		delete(m.authFail.m, key)
		return false
	}
	return now.Before(f.coolUntil)
}

// authFailed charges one failed authentication to the client's address. When
// the address reaches AuthFailuresPerIP within AuthFailureWindow it cools
// down: Admit refuses its new connections (reason auth_cooldown) for
// AuthCooldown. Exempt addresses are not charged.
func (m *Manager) authFailed(remote net.Addr) {
	if m.opts.AuthFailuresPerIP <= 0 {
		return
	}
	key, keyed := m.limitKey(remote)
	if !keyed {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.authFail.m[key]
	if f == nil {
		if len(m.authFail.m) >= maxAuthFailureEntries {
			for k, e := range m.authFail.m {
				if e.expired(now, m.opts.AuthFailureWindow) {
					delete(m.authFail.m, k)
				}
			}
			if len(m.authFail.m) >= maxAuthFailureEntries {
				return
			}
		}
		f = &ipFailures{windowStart: now}
		m.authFail.m[key] = f
	}
	if now.Sub(f.windowStart) >= m.opts.AuthFailureWindow {
		f.count, f.windowStart = 0, now
	}
	if f.count++; f.count >= m.opts.AuthFailuresPerIP {
		f.coolUntil = now.Add(m.opts.AuthCooldown)
		f.count, f.windowStart = 0, now
		m.opts.Logger.Warn("address over its failed-authentication budget; cooling down", "prefix", key.String(), "cooldown", m.opts.AuthCooldown.String())
	}
}

// authFailureEntries reports the size of the per-IP table (for tests).
func (m *Manager) authFailureEntries() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.authFail.m)
}
