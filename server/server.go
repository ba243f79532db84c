// Package server runs a den node: the gateway, the rooms runtime and
// storage, wired together. `den serve` is this package with flags; a Go
// program that registers its own room kinds runs it directly:
//
//	srv, err := server.New(server.Config{Data: "./data", Kinds: []rooms.Kind{myKind}})
//	...
//	err = srv.Start()
//	...
//	<-ctx.Done()
//	err = srv.Shutdown(context.Background())
package server

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
	"github.com/den-rooms/den/storage"
)

// demoPage is GET /: join a chat room from a browser.
//
//go:embed demo.html
var demoPage []byte

// Config configures a node. Zero values mean den serve's defaults.
type Config struct {
	// Gateway is the network side: listen address, limits, origins. Its
	// Rooms and Handler are set by the server.
	Gateway gateway.Config
	// Data is the folder for node.db and the rooms' databases.
	Data string
	// Synchronous is storage.SyncFull (the default) or storage.SyncNormal.
	Synchronous string
	// Kinds are served beside the built-in echo, chat and counter; a kind
	// named like a built-in one replaces it.
	Kinds []rooms.Kind
	// AdminToken, if set, serves the admin API under /admin/rooms to
	// requests bearing it. GET / (a chat demo page) and GET /metrics
	// (Prometheus) are always served.
	AdminToken string
	// MaxOpenDatabases bounds the room databases open at once (storage's
	// handle pool, storage.DefaultMaxOpen); each costs two descriptors.
	MaxOpenDatabases int
	// Tokens, if set, verifies the JWT a join may carry (Authorization:
	// Bearer, a "bearer.<token>" subprotocol offer, or ?token=); a join
	// with a bad token gets 401, one whose token does not allow its room
	// 403. TokenRequired refuses joins without one.
	Tokens        *auth.Verifier
	TokenRequired bool
	// Webhook, if set, is asked about every join before its room is.
	Webhook *auth.Webhook
	// MaxRoomSockets bounds one room's sockets (rooms.DefaultMaxSocket);
	// MaxActiveRooms bounds the rooms awake at once (0: no limit).
	MaxRoomSockets, MaxActiveRooms int
	// HibernateAfter and EvictAfter are how long an idle room stays in
	// memory with and without sockets (rooms.Config).
	HibernateAfter time.Duration
	EvictAfter     time.Duration
	// KeepEmptyRooms keeps the file and record of a room evicted with
	// nothing stored, which by default are deleted (rooms.Config).
	KeepEmptyRooms bool
	Logger         *zap.Logger
}

// Server is a running node.
type Server struct {
	gw          *gateway.Server
	rt          *rooms.Runtime
	store       *storage.Store
	log         *zap.Logger
	observe     *observer
	logsDropped atomic.Uint64
	cancelAuth  context.CancelFunc // ends webhook calls at shutdown; nil without a guard
}

// DataError is a data folder the node cannot keep its storage in: not a
// folder, not writable, or held by another den.
type DataError struct {
	Dir string
	Err error
}

func (e *DataError) Error() string { return fmt.Sprintf("data folder %s: %v", e.Dir, e.Err) }

func (e *DataError) Unwrap() error { return e.Err }

// New opens the node's storage and builds its runtime and gateway.
func New(cfg Config) (*Server, error) {
	if cfg.Data == "" {
		cfg.Data = "./den-data"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.TokenRequired && cfg.Tokens == nil {
		return nil, errors.New("server: a token is required, but no token keys are configured")
	}
	store, err := storage.Open(storage.Options{Dir: cfg.Data, Synchronous: cfg.Synchronous, MaxOpen: cfg.MaxOpenDatabases})
	if err != nil {
		return nil, &DataError{Dir: cfg.Data, Err: err}
	}
	if err := storage.TuningError(); err != nil {
		cfg.Logger.Warn("a process-wide SQLite setting of den's did not take; rooms run without it", zap.Error(err))
	}
	if err := store.UnfinishedDeletions(); err != nil {
		cfg.Logger.Warn("room deletions recorded before this start could not be finished; each is tried again before its room opens", zap.Error(err))
	}
	kinds := map[string]rooms.Kind{}
	var order []string
	for _, k := range append(builtin.Kinds(), cfg.Kinds...) {
		if _, ok := kinds[k.Name]; !ok {
			order = append(order, k.Name)
		}
		kinds[k.Name] = k
	}
	list := make([]rooms.Kind, 0, len(order))
	for _, name := range order {
		list = append(list, kinds[name])
	}
	s := &Server{store: store, observe: newObserver()}
	s.log = cfg.Logger.WithOptions(zap.WrapCore(s.sample))
	rt, err := rooms.New(rooms.Config{
		Store: store, Kinds: list, Logger: s.log.Named("rooms"), Broadcast: gateway.RoomsBroadcast,
		HibernateAfter: cfg.HibernateAfter, EvictAfter: cfg.EvictAfter, KeepEmptyRooms: cfg.KeepEmptyRooms, Observer: s.observe,
		MaxSockets: cfg.MaxRoomSockets, MaxActive: cfg.MaxActiveRooms,
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	s.rt = rt
	gcfg := cfg.Gateway
	gcfg.Logger = s.log
	gcfg.Rooms = gateway.Runtime(rt)
	if cfg.Tokens != nil || cfg.Webhook != nil {
		var ctx context.Context
		ctx, s.cancelAuth = context.WithCancel(context.Background())
		gcfg.Rooms = &guard{Rooms: gcfg.Rooms, verifier: cfg.Tokens, required: cfg.TokenRequired,
			webhook: cfg.Webhook, inflight: make(chan struct{}, maxWebhookCalls), baseCtx: ctx, log: s.log.Named("auth")}
	}
	if gcfg.Subprotocol == nil && cfg.Tokens != nil {
		gcfg.Subprotocol = pickSubprotocol
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(demoPage)
	})
	mux.Handle("GET /metrics", s.metrics())
	if cfg.AdminToken != "" {
		mux.Handle("/admin/", rt.Admin(cfg.AdminToken))
	}
	gcfg.Handler = mux
	gw, err := gateway.New(gcfg)
	if err != nil {
		// The runtime's scheduler and sweep run already: they stop
		// before the store they use closes.
		_ = rt.Shutdown(context.Background())
		if s.cancelAuth != nil {
			s.cancelAuth()
		}
		store.Close()
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	s.gw = gw
	return s, nil
}

// sample rate-limits the log: past the first 10 entries with the same
// message and level in a second, only every 100th is written, so a flood
// of one error (a client sending garbage in a loop) neither fills the
// disk nor hides other entries. What it drops is counted in
// den_log_entries_dropped_total.
func (s *Server) sample(core zapcore.Core) zapcore.Core {
	return zapcore.NewSamplerWithOptions(core, time.Second, 10, 100, zapcore.SamplerHook(func(_ zapcore.Entry, d zapcore.SamplingDecision) {
		if d&zapcore.LogDropped != 0 {
			s.logsDropped.Add(1)
		}
	}))
}

// Start listens and serves.
func (s *Server) Start() error { return s.gw.Start() }

// Addr is the address the node listens on.
func (s *Server) Addr() net.Addr { return s.gw.Addr() }

// Runtime is the node's rooms runtime.
func (s *Server) Runtime() *rooms.Runtime { return s.rt }

// Shutdown closes every socket (1012), lets the rooms handle their last
// events and closes storage, within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.cancelAuth != nil {
		s.cancelAuth()
	}
	gerr := s.gw.Shutdown(ctx)
	// Rooms stop after the gateway: its sockets' close events are the last
	// events they handle.
	rerr := s.rt.Shutdown(ctx)
	serr := s.store.Close()
	return errors.Join(gerr, rerr, serr)
}

// Stats are the gateway's counters.
func (s *Server) Stats() gateway.Stats { return s.gw.Stats() }
