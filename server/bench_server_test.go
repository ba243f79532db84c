package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// benchServerEnv runs this test binary as a benchmark node instead of its
// tests: den's built-in kinds plus "journal", which stores each message
// durably and acknowledges it to its sender alone. A closed-loop echo load
// against it measures durable events through group commit without the
// fan-out of a chat room (where each event costs one frame per member):
//
//	go test -c -o /tmp/server.test ./server
//	DEN_BENCH_SERVER=127.0.0.1:9607 DEN_BENCH_DATA=/tmp/bench-data /tmp/server.test
//
// DEN_BENCH_SYNC=normal relaxes fsync; DEN_BENCH_HIBERNATE=1s sets
// --hibernate-after; DEN_BENCH_MAXOPEN=N bounds the open databases; DEN_BENCH_CPUPROFILE=FILE writes a CPU profile of the
// whole run; DEN_BENCH_HEAPPROFILE=FILE writes a heap profile on SIGUSR1.
//
//	den loadtest echo --url 'ws://127.0.0.1:9607/rooms/journal/one?c={n}' --rooms 1 --count 100 --loops 1
const benchServerEnv = "DEN_BENCH_SERVER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(benchServerEnv); addr != "" {
		hibernate, _ := time.ParseDuration(os.Getenv("DEN_BENCH_HIBERNATE"))
		maxOpen, _ := strconv.Atoi(os.Getenv("DEN_BENCH_MAXOPEN"))
		runBenchServer(addr, os.Getenv("DEN_BENCH_DATA"), os.Getenv("DEN_BENCH_SYNC"), hibernate, maxOpen)
		return
	}
	os.Exit(m.Run())
}

func runBenchServer(addr, data, sync string, hibernate time.Duration, maxOpen int) {
	if data == "" {
		var err error
		if data, err = os.MkdirTemp("", "den-bench"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(data)
	}
	srv, err := server.New(server.Config{
		Gateway:          gateway.Config{Listen: addr},
		Data:             data,
		Synchronous:      sync,
		HibernateAfter:   hibernate,
		MaxOpenDatabases: maxOpen,
		Kinds:            []rooms.Kind{{Name: "journal", New: newJournal}, {Name: "tally", New: newTally}},
	})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.Addr(), os.Getpid())
	if path := os.Getenv("DEN_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("DEN_BENCH_HEAPPROFILE"); path != "" {
		// SIGUSR1 writes a heap profile: taken while the load holds.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				runtime.GC()
				if f, err := os.Create(path); err == nil {
					_ = pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	<-ctx.Done()
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
}

// journal stores every message and sends it back to its sender once it is
// durable.
type journal struct {
	rooms.Base
	st *rooms.State
}

func newJournal(st *rooms.State) rooms.Handler {
	return &journal{st: st}
}

func (j *journal) Connect(c *rooms.Connect) error {
	_, err := j.st.Storage.Exec(`CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, body BLOB)`)
	return err
}

func (j *journal) Message(s *rooms.Sock, text bool, data []byte) error {
	if _, err := j.st.Storage.Exec(`INSERT INTO log (body) VALUES (?)`, data); err != nil {
		return err
	}
	s.Send(text, data)
	return nil
}

// tally counts its alarm's runs in a table. "arm" sets the alarm half a
// second ahead; GET answers the count. While the file named by
// DEN_TALLY_BLOCK exists, the alarm handler writes its row, creates
// DEN_TALLY_BLOCK+".running" and blocks: a test kills den there.
type tally struct {
	rooms.Base
	st *rooms.State
}

func newTally(st *rooms.State) rooms.Handler {
	_, _ = st.Storage.Exec(`CREATE TABLE IF NOT EXISTS runs (n INTEGER)`)
	return &tally{st: st}
}

func (t *tally) Message(s *rooms.Sock, _ bool, data []byte) error {
	if string(data) == "arm" {
		if err := t.st.SetAlarm(t.st.Now().Add(500 * time.Millisecond)); err != nil {
			return err
		}
		s.SendText("armed")
	}
	return nil
}

func (t *tally) Alarm(rooms.AlarmInfo) error {
	if _, err := t.st.Storage.Exec(`INSERT INTO runs (n) VALUES (1)`); err != nil {
		return err
	}
	if block := os.Getenv("DEN_TALLY_BLOCK"); block != "" {
		if _, err := os.Stat(block); err == nil {
			_ = os.WriteFile(block+".running", nil, 0o644)
			select {}
		}
	}
	return nil
}

func (t *tally) Request(w http.ResponseWriter, _ *http.Request) error {
	cur, err := t.st.Storage.Exec(`SELECT count(*) FROM runs`)
	if err != nil {
		return err
	}
	_, pending, err := t.st.Alarm()
	if err != nil {
		return err
	}
	cur.Next()
	fmt.Fprintf(w, "runs=%d pending=%v", cur.Values()[0], pending)
	return nil
}
