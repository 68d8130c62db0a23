package session

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Manager owns the sessions of one process: admission (connection limits),
// the registry by id and by account, and shutdown. Session ids are unique
// across every transport the manager serves.
type Manager struct {
	opts   Options
	poller *transport.Poller // parked readers (nil when Options.IdlePark is negative)
	parked atomic.Int64      // sessions whose reader is parked

	nextID atomic.Uint64

	mu       sync.RWMutex
	sessions map[uint64]*Session
	accounts map[string]*Session
	stages   map[int64]map[*Session]struct{} // stage id to its sessions
	conns    int
	perIP    map[netip.Prefix]int
	draining bool
	drain    *drainState   // the drain in progress, for sessions registering during it
	closeAll CloseReason   // set by CloseAll: sessions registering afterwards close at once
	live     int           // sessions in Serve, registered or not
	idle     chan struct{} // closed when live drops to 0; replaced when it rises
	authFail authFailures  // per-IP failed authentications (see authFailed)

	names      nameTable
	compPool   sync.Pool
	decompPool sync.Pool // *[]byte buffers for LZ4 request payloads
	stats      stats
}

// stats are the manager's counters, read by Stats and the metrics collector.
type stats struct {
	kinds          [len(transport.Kinds) + 1]kindStats // the last one: unknown kinds
	rejected       [numRejects]atomic.Uint64
	authFailed     atomic.Uint64
	rateLimited    atomic.Uint64
	unencodable    atomic.Uint64
	budgetExceeded atomic.Uint64
}

// kindStats are the counters of one transport.
type kindStats struct {
	accepted   atomic.Uint64
	active     atomic.Int64
	packetsIn  atomic.Uint64
	bytesIn    atomic.Uint64
	packetsOut atomic.Uint64
	bytesOut   atomic.Uint64
	closed     [numReasons]atomic.Uint64
}

func (st *stats) kind(k transport.Kind) *kindStats {
	if i := k.Index(); i >= 0 {
		return &st.kinds[i]
	}
	return &st.kinds[len(transport.Kinds)]
}

// Stats is a snapshot of the manager's counters.
type Stats struct {
	// Active is the number of open sessions.
	Active int
	// Parked is the number of open sessions whose reader is parked (see
	// Options.IdlePark).
	Parked int
	// Accepted counts connections that became sessions.
	Accepted uint64
	// Rejected counts refused connections by reason.
	Rejected map[RejectReason]uint64
	// Closed counts ended sessions by reason.
	Closed map[CloseReason]uint64
	// AuthFailures counts failed authentications.
	AuthFailures uint64
	// RateLimited counts packets (and WebSocket control frames) over the rate limit.
	RateLimited uint64
	// UnencodableReplies counts packets the application sent that could not
	// be encoded (over MaxPacketSize); a request was answered with ErrorCode
	// InternalError instead.
	UnencodableReplies uint64
	// InboundBudgetExceeded counts sessions closed because a frame or a
	// decompressed payload would have passed the process-wide inbound budget.
	InboundBudgetExceeded uint64
	// Transports holds the per-transport counters of every known transport.
	Transports map[transport.Kind]TransportStats
}

// TransportStats are the counters of one transport.
type TransportStats struct {
	// Active is the number of open sessions.
	Active int64
	// Accepted counts connections that became sessions.
	Accepted uint64
	// PacketsIn and BytesIn count inbound frames and their bytes (prefix included).
	PacketsIn, BytesIn uint64
	// PacketsOut and BytesOut count frames and bytes written to clients.
	PacketsOut, BytesOut uint64
	// Closed counts ended sessions by reason.
	Closed map[CloseReason]uint64
}

// Observer receives per-packet measurements, for histograms. Its methods are
// called on the hot path and must be fast and safe for concurrent use.
type Observer interface {
	// PacketReceived is called with each inbound frame's size (prefix included).
	PacketReceived(bytes int)
	// PacketSent is called with each outbound frame's size (prefix included)
	// when it is queued.
	PacketSent(bytes int)
	// HandlerDone is called with the time Handler.OnPacket took, counted
	// from the packet's clock read just after it was read (after its
	// decompression for a compressed one), so it includes the engine's
	// parsing and rate-limit check of the packet, a fraction of a
	// microsecond.
	HandlerDone(d time.Duration)
}

// NewManager returns a manager; see Options for defaults.
func NewManager(opts Options) (*Manager, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	m := &Manager{
		opts:     opts,
		sessions: make(map[uint64]*Session),
		accounts: make(map[string]*Session),
		stages:   make(map[int64]map[*Session]struct{}),
		perIP:    make(map[netip.Prefix]int),
		authFail: authFailures{m: make(map[netip.Prefix]*ipFailures)},
	}
	if opts.IdlePark > 0 {
		m.poller = transport.NewPoller()
	}
	m.compPool.New = func() any { return &protocol.Compressor{Threshold: opts.CompressionThreshold} }
	m.decompPool.New = func() any { return new([]byte) }
	return m, nil
}

// Options returns the effective options (defaults applied).
func (m *Manager) Options() Options { return m.opts }

// RejectError is returned by Admit for a refused connection.
type RejectError struct {
	// Reason is why the connection was refused.
	Reason RejectReason
	// Addr is the client address.
	Addr string
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("connection from %s refused: %s", e.Addr, e.Reason)
}

// Admission is a connection slot granted by Admit; Serve releases it.
type Admission struct {
	m      *Manager
	prefix netip.Prefix
	keyed  bool
	once   sync.Once
}

// Release frees the slot (for a connection that will not be served).
func (a *Admission) Release() {
	a.once.Do(func() {
		a.m.mu.Lock()
		a.m.conns--
		if a.keyed {
			if a.m.perIP[a.prefix]--; a.m.perIP[a.prefix] <= 0 {
				delete(a.m.perIP, a.prefix)
			}
		}
		a.m.mu.Unlock()
	})
}

// ipKey groups an address for the per-IP limit: IPv4 by address, IPv6 by /64.
func ipKey(addr net.Addr) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32), true
	}
	p, _ := ip.Prefix(64)
	return p, true
}

// limitKey is the per-IP key of remote; keyed is false for an exempt or
// unparsable address.
func (m *Manager) limitKey(remote net.Addr) (key netip.Prefix, keyed bool) {
	key, keyed = ipKey(remote)
	if keyed {
		for _, p := range m.opts.PerIPExempt {
			if p.Contains(key.Addr()) {
				return key, false
			}
		}
	}
	return key, keyed
}

// Admit checks the connection limits for a new connection from remote and
// reserves a slot. Call it as early as possible (before a TLS handshake). A
// refusal is counted and returned as a *RejectError.
func (m *Manager) Admit(remote net.Addr) (*Admission, error) {
	key, keyed := m.limitKey(remote)
	m.mu.Lock()
	defer m.mu.Unlock()
	reject := func(r RejectReason) (*Admission, error) {
		m.stats.rejected[r].Add(1)
		return nil, &RejectError{Reason: r, Addr: remote.String()}
	}
	switch {
	case m.draining:
		return reject(RejectDraining)
	case keyed && m.coolingDownLocked(key):
		return reject(RejectAuthCooldown)
	case m.conns >= m.opts.MaxConnections:
		return reject(RejectMaxConnections)
	case keyed && m.perIP[key] >= m.opts.MaxConnectionsPerIP:
		return reject(RejectPerIP)
	}
	m.conns++
	if keyed {
		m.perIP[key]++
	}
	return &Admission{m: m, prefix: key, keyed: keyed}, nil
}

// CountReject counts a connection refused outside Admit (e.g. a failed TLS handshake).
func (m *Manager) CountReject(r RejectReason) {
	if r < numRejects {
		m.stats.rejected[r].Add(1)
	}
}

// Serve runs a session on c until it ends, then releases adm. It blocks; call
// it in the connection's goroutine. adm may be nil when the caller did not
// call Admit (the limits are then checked here).
func (m *Manager) Serve(c transport.Conn, adm *Admission) {
	if adm = m.admitted(c, adm); adm != nil {
		m.enter()
		m.serve(c, adm, false)
	}
}

// Go is Serve on a fresh goroutine: it returns at once. The session's
// reader then parks on a small stack of its own instead of under the
// caller's accept, handshake or HTTP frames, which would pin a larger stack
// for the session's life. Wait and CloseAll count the session from the
// moment Go returns.
func (m *Manager) Go(c transport.Conn, adm *Admission) {
	if adm = m.admitted(c, adm); adm != nil {
		m.enter()
		go m.serve(c, adm, true)
	}
}

// admitted returns adm, or a fresh admission for c when adm is nil; on a
// refusal it closes c and returns nil.
func (m *Manager) admitted(c transport.Conn, adm *Admission) *Admission {
	if adm != nil {
		return adm
	}
	adm, err := m.Admit(c.RemoteAddr())
	if err != nil {
		m.opts.Logger.Debug("connection refused", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return nil
	}
	return adm
}

// serve runs a session counted by enter; the session releases adm when it
// ends. With mayPark, the session's reader may park while idle (see
// park.go), so serve can return before the session ends.
func (m *Manager) serve(c transport.Conn, adm *Admission, mayPark bool) {
	s := m.newSession(c)
	s.adm = adm
	s.canPark = mayPark && m.poller != nil
	s.detached = mayPark
	s.ks.accepted.Add(1)
	s.run()
}

// enter counts a session in Serve (before anyone can wait for it).
func (m *Manager) enter() {
	m.mu.Lock()
	if m.live == 0 {
		m.idle = make(chan struct{})
	}
	m.live++
	m.mu.Unlock()
}

// leave uncounts a session; the last one wakes every Wait.
func (m *Manager) leave() {
	m.mu.Lock()
	if m.live--; m.live == 0 {
		close(m.idle)
	}
	m.mu.Unlock()
}

// register adds s to the registry and to the stage index (a stage set in
// OnConnect counts). A session registering while the manager drains gets
// its @Drain@ at once and its close scheduled; after CloseAll it closes at
// once.
func (m *Manager) register(s *Session) {
	m.mu.Lock()
	m.sessions[s.id] = s
	if stage := s.stageID.Load(); stage != 0 {
		m.joinStageLocked(s, stage)
	}
	drain, closeAll := m.drain, m.closeAll
	m.mu.Unlock()
	switch {
	case closeAll != ReasonNone:
		s.Close(closeAll)
	case drain != nil:
		drain.add(s)
	}
}

// unregister removes s from the registry and from its account binding.
func (m *Manager) unregister(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, s.id)
	if acct := s.AccountID(); acct != "" && m.accounts[acct] == s {
		delete(m.accounts, acct)
	}
	m.leaveStageLocked(s, s.StageID())
}

// setStage records s's stage and moves it in the stage index; both change
// under the manager's lock so concurrent calls cannot leave s in two stages.
// A session not (or no longer) registered is not indexed.
func (m *Manager) setStage(s *Session, new int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leaveStageLocked(s, s.stageID.Swap(new))
	if new == 0 || m.sessions[s.id] != s {
		return
	}
	m.joinStageLocked(s, new)
}

func (m *Manager) joinStageLocked(s *Session, stage int64) {
	members := m.stages[stage]
	if members == nil {
		members = make(map[*Session]struct{})
		m.stages[stage] = members
	}
	members[s] = struct{}{}
}

func (m *Manager) leaveStageLocked(s *Session, stage int64) {
	if members := m.stages[stage]; members != nil {
		delete(members, s)
		if len(members) == 0 {
			delete(m.stages, stage)
		}
	}
}

// StageMembers returns the open sessions placed in stage (see SetStageID).
func (m *Manager) StageMembers(stage int64) []*Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Session, 0, len(m.stages[stage]))
	for s := range m.stages[stage] {
		out = append(out, s)
	}
	return out
}

// Broadcast pushes one packet (MsgSeq 0) to every session in stage, except
// the session except (may be nil). The frame is encoded once. A recipient
// whose outbox is full is closed as a slow consumer; the others still get
// the packet. It returns how many sessions the packet was queued for.
func (m *Manager) Broadcast(stage int64, msgID string, payload []byte, except *Session) (int, error) {
	if msgID == "" {
		return 0, fmt.Errorf("broadcast: empty MsgId")
	}
	var comp *protocol.Compressor
	body := payload
	h := protocol.Header{StageID: stage}
	if m.opts.Compression && len(payload) >= m.opts.CompressionThreshold {
		comp = m.compPool.Get().(*protocol.Compressor)
		defer m.compPool.Put(comp)
		body, h.OriginalSize = comp.Compress(payload)
	}
	if n := protocol.ResponseSize(len(msgID), len(body)) - protocol.LengthSize; n > m.opts.MaxPacketSize {
		return 0, fmt.Errorf("broadcast %s: %d-byte body exceeds MaxPacketSize %d", msgID, n, m.opts.MaxPacketSize)
	}
	frame, err := protocol.AppendFull(nil, h, msgID, body)
	if err != nil {
		return 0, fmt.Errorf("broadcast %s: %w", msgID, err)
	}
	sent := 0
	for _, s := range m.StageMembers(stage) {
		if s != except && s.sendFrame(frame) == nil {
			sent++
		}
	}
	return sent, nil
}

// bind makes s the session of account, marks it authenticated, and returns
// the session it supersedes. A session past its close point (auth timeout,
// drain, kick) is refused (ok false): the check and the binding happen under
// the manager's lock, which the auth timeout also takes. A session already
// bound to another account leaves it (re-authentication rebinds).
func (m *Manager) bind(s *Session, account string) (old *Session, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.isClosing() {
		return nil, false
	}
	s.mu.Lock()
	prev := s.account
	s.account = account
	s.mu.Unlock()
	if prev != "" && prev != account && m.accounts[prev] == s {
		delete(m.accounts, prev)
	}
	old = m.accounts[account]
	if old == s {
		old = nil
	}
	m.accounts[account] = s
	s.authenticated.Store(true)
	return old, true
}

// isAuthMsgID reports whether id is one of the authentication MsgIds.
func (m *Manager) isAuthMsgID(id string) bool {
	for _, a := range m.opts.AuthenticateMsgIDs {
		if a == id {
			return true
		}
	}
	return false
}

// Get returns the open session with the given id.
func (m *Manager) Get(id uint64) (*Session, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.sessions[id]
	return s, ok
}

// ByAccount returns the open session authenticated for account.
func (m *Manager) ByAccount(account string) (*Session, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.accounts[account]
	return s, ok
}

// Count returns the number of open sessions.
func (m *Manager) Count() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.sessions)
}

// Range calls fn for a snapshot of the open sessions until fn returns false.
func (m *Manager) Range(fn func(*Session) bool) {
	m.mu.RLock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.RUnlock()
	for _, s := range list {
		if !fn(s) {
			return
		}
	}
}

// SetDraining makes Admit refuse new connections (reason draining).
func (m *Manager) SetDraining(on bool) {
	m.mu.Lock()
	m.draining = on
	if !on {
		m.drain = nil // sessions registering from now on are not drained
	}
	m.mu.Unlock()
}

// Draining reports whether new connections are refused.
func (m *Manager) Draining() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.draining
}

// CloseAll closes every open session with reason (each with the lingering
// close: what is queued is written first) and waits until they have ended
// or ctx is done. A session still in OnConnect is closed when it registers,
// as is any session served afterwards: CloseAll ends the manager's service.
func (m *Manager) CloseAll(ctx context.Context, reason CloseReason) error {
	if reason == ReasonNone {
		reason = AppClosed
	}
	m.mu.Lock()
	m.closeAll = reason
	m.mu.Unlock()
	m.Range(func(s *Session) bool {
		s.Close(reason)
		return true
	})
	return m.Wait(ctx)
}

// AbortAll closes every open session at once with reason, dropping what is
// queued (after a drain timeout), and waits up to a short bound for them to
// end: connections close at once; only a handler that never returns keeps
// its session from ending, and that is not waited for long.
func (m *Manager) AbortAll(reason CloseReason) {
	m.Range(func(s *Session) bool {
		s.abort(reason, nil)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), abortWait)
	defer cancel()
	_ = m.Wait(ctx)
}

// Wait blocks until no session is being served (every one served so far,
// registered or still in OnConnect, has ended), or ctx is done. It leaves no
// goroutine behind.
func (m *Manager) Wait(ctx context.Context) error {
	m.mu.RLock()
	live, idle := m.live, m.idle
	m.mu.RUnlock()
	if live == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d sessions: %w", m.Count(), ctx.Err())
	}
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	st := Stats{
		Active:       m.Count(),
		Parked:       int(m.parked.Load()),
		Rejected:     make(map[RejectReason]uint64),
		Closed:       make(map[CloseReason]uint64),
		AuthFailures: m.stats.authFailed.Load(),
		RateLimited:  m.stats.rateLimited.Load(),

		UnencodableReplies:    m.stats.unencodable.Load(),
		InboundBudgetExceeded: m.stats.budgetExceeded.Load(),
		Transports:            make(map[transport.Kind]TransportStats, len(transport.Kinds)),
	}
	for r := range m.stats.rejected {
		if v := m.stats.rejected[r].Load(); v > 0 {
			st.Rejected[RejectReason(r)] = v
		}
	}
	for i := range m.stats.kinds {
		ks := &m.stats.kinds[i]
		ts := TransportStats{
			Active: ks.active.Load(), Accepted: ks.accepted.Load(),
			PacketsIn: ks.packetsIn.Load(), BytesIn: ks.bytesIn.Load(),
			PacketsOut: ks.packetsOut.Load(), BytesOut: ks.bytesOut.Load(),
			Closed: make(map[CloseReason]uint64),
		}
		for r := range ks.closed {
			if v := ks.closed[r].Load(); v > 0 {
				ts.Closed[CloseReason(r)] += v
				st.Closed[CloseReason(r)] += v
			}
		}
		st.Accepted += ts.Accepted
		if i < len(transport.Kinds) {
			st.Transports[transport.Kinds[i]] = ts
		}
	}
	return st
}

// nameTable interns message names for every session of a manager. Readers
// look names up without a lock in an immutable map; a new name copies the
// map (copy-on-write), so the table costs one map per manager instead of one
// per session. It holds at most maxInterned names.
type nameTable struct {
	mu    sync.Mutex
	table atomic.Pointer[map[string]names]
}

// intern returns the table's strings for b and its reply name, adding them
// while the table has room.
func (t *nameTable) intern(b []byte) names {
	if tab := t.table.Load(); tab != nil {
		if n, ok := (*tab)[string(b)]; ok {
			return n
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.table.Load()
	if old != nil {
		if n, ok := (*old)[string(b)]; ok {
			return n
		}
	}
	id := string(b)
	n := names{id: id, reply: protocol.ReplyMsgID(id)}
	if old != nil && len(*old) >= maxInterned {
		return n
	}
	next := make(map[string]names, 1+mapLen(old))
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[id] = n
	t.table.Store(&next)
	return n
}

// size reports how many names the table holds.
func (t *nameTable) size() int { return mapLen(t.table.Load()) }

func mapLen(m *map[string]names) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
