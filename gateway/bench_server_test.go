package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// benchServerEnv runs this test binary as a benchmark server instead of
// its tests: den's gateway with a "bcast" kind that sends every message
// to every member of its room, and echo. It serves until SIGTERM/SIGINT:
//
//	go test -c -o /tmp/gateway.test ./gateway
//	DEN_BENCH_SERVER=127.0.0.1:9102 /tmp/gateway.test
//
// then point a load client at ws://127.0.0.1:9102/rooms/bcast/{room}.
const benchServerEnv = "DEN_BENCH_SERVER"

func runBenchServer(addr string) {
	srv, err := New(Config{Listen: addr, Rooms: newBcastRooms(), Logger: zap.NewNop()})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	<-ctx.Done()
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
}

// bcastRooms is the benchmark's broadcast kind: rooms keep a member list
// copied on change, so a broadcast allocates only its one frame.
type bcastRooms struct {
	mu    sync.Mutex
	rooms map[string]*bcastRoom
}

type bcastRoom struct {
	name    string
	members []*Socket // replaced, never mutated, under bcastRooms.mu
}

func newBcastRooms() *bcastRooms { return &bcastRooms{rooms: map[string]*bcastRoom{}} }

func (b *bcastRooms) Join(j *Join) {
	if j.Kind == "echo" {
		Echo{}.Join(j)
		return
	}
	if j.Kind != "bcast" {
		j.Refuse(http.StatusNotFound, "no such kind")
		return
	}
	s := j.Accept()
	b.mu.Lock()
	r := b.rooms[j.Name]
	if r == nil {
		r = &bcastRoom{name: j.Name}
		b.rooms[j.Name] = r
	}
	r.members = append(r.members[:len(r.members):len(r.members)], s)
	s.SetValue(r)
	b.mu.Unlock()
}

func (b *bcastRooms) Message(s *Socket, text bool, payload []byte) {
	r, ok := s.Value().(*bcastRoom)
	if !ok {
		_ = s.Send(text, payload) // echo
		return
	}
	b.mu.Lock()
	members := r.members
	b.mu.Unlock()
	Broadcast(NewFrame(text, payload), members)
}

func (b *bcastRooms) Closed(s *Socket, _ int, _ string, _ bool) {
	r, ok := s.Value().(*bcastRoom)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	members := make([]*Socket, 0, len(r.members))
	for _, m := range r.members {
		if m != s {
			members = append(members, m)
		}
	}
	r.members = members
}

func (b *bcastRooms) ServeHTTP(w http.ResponseWriter, r *http.Request, _, _ string) {
	http.NotFound(w, r)
}
