package rooms

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// logKind records, per socket, the messages and closes its handlers saw.
type logKind struct {
	mu     sync.Mutex
	msgs   map[uint64][]int
	closes map[uint64]int
	built  int
}

type logRoom struct {
	Base
	k *logKind
}

func (k *logKind) kind() Kind {
	k.msgs, k.closes = map[uint64][]int{}, map[uint64]int{}
	return Kind{Name: "log", New: func(st *State) Handler {
		k.mu.Lock()
		k.built++
		k.mu.Unlock()
		return &logRoom{k: k}
	}}
}

func (l *logRoom) Message(s *Sock, text bool, data []byte) error {
	n, _ := strconv.Atoi(string(data))
	l.k.mu.Lock()
	l.k.msgs[s.ID()] = append(l.k.msgs[s.ID()], n)
	l.k.mu.Unlock()
	s.Send(true, data)
	return nil
}

func (l *logRoom) Close(s *Sock, code int, reason string, clean bool) error {
	l.k.mu.Lock()
	l.k.closes[s.ID()]++
	l.k.mu.Unlock()
	return nil
}

func TestStressSleepWake(t *testing.T) {
	k := &logKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	const roomsN, socksN, msgsN = 6, 4, 150
	var socks []*fsock
	for r := range roomsN {
		for range socksN {
			socks = append(socks, join(t, rt, "log", fmt.Sprint("r", r)))
		}
	}
	stop := make(chan struct{})
	var adv sync.WaitGroup
	adv.Add(1)
	go func() {
		defer adv.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fake.Advance(11 * time.Second)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range msgsN {
				rt.Message(s, true, []byte(strconv.Itoa(i)))
				if i%3 == 0 {
					time.Sleep(time.Duration(1+i%4) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	waitUntil(t, "every echo", func() bool {
		for _, s := range socks {
			if len(s.msgs()) < msgsN {
				return false
			}
		}
		return true
	})
	for _, s := range socks {
		s.clientClose()
	}
	waitUntil(t, "every close handled", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return len(k.closes) == len(socks)
	})
	close(stop)
	adv.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	var bad []string
	for _, s := range socks {
		got := k.msgs[s.ID()]
		if len(got) != msgsN {
			bad = append(bad, fmt.Sprintf("sock %d: %d messages", s.ID(), len(got)))
			continue
		}
		for i, n := range got {
			if n != i {
				bad = append(bad, fmt.Sprintf("sock %d: message %d is %d", s.ID(), i, n))
				break
			}
		}
		if k.closes[s.ID()] != 1 {
			bad = append(bad, fmt.Sprintf("sock %d: %d closes", s.ID(), k.closes[s.ID()]))
		}
	}
	if len(bad) > 0 {
		t.Fatal(strings.Join(bad, "\n"))
	}
	t.Logf("constructions: %d, stats %+v", k.built, rt.Stats())
}

func TestStressDelete(t *testing.T) {
	k := &logKind{}
	rt, store, fake := fakeRuntime(t, k.kind())
	stop := make(chan struct{})
	var adv sync.WaitGroup
	adv.Add(1)
	go func() {
		defer adv.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fake.Advance(11 * time.Second)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { close(stop); adv.Wait() }()
	for round := range 40 {
		name := fmt.Sprint("d", round%3)
		var socks []*fsock
		for range 3 {
			socks = append(socks, join(t, rt, "log", name))
		}
		var wg sync.WaitGroup
		for _, s := range socks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 30 {
					rt.Message(s, true, []byte(strconv.Itoa(i)))
					if i%5 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%7) * time.Millisecond)
		done := make(chan error, 1)
		go func() { _, err := rt.Delete("log", name); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: delete: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Delete hangs", round)
		}
		for _, s := range socks {
			if c := s.code(); c != 1000 {
				t.Fatalf("round %d: a socket of the deleted room: close %d, want 1000", round, c)
			}
		}
		wg.Wait()
		if info, _ := rt.Info("log", name); info.State != "absent" {
			t.Fatalf("round %d: after delete: %+v", round, info)
		}
		if _, ok, _ := store.Record(IDFromName("log", name).String()); ok {
			t.Fatalf("round %d: record remains", round)
		}
	}
	t.Logf("stats %+v", rt.Stats())
}

func TestStressDeleteVsEviction(t *testing.T) {
	k := &logKind{}
	rt, store, fake := fakeRuntime(t, k.kind())
	for round := range 200 {
		name := fmt.Sprint("e", round)
		rt.ServeHTTP(httptestRecorder(), httptestRequest(), "log", name)
		go func() {
			for range 3 {
				fake.Advance(61 * time.Second)
				time.Sleep(time.Duration(round%5) * 50 * time.Microsecond)
			}
		}()
		time.Sleep(time.Duration(round%7) * 40 * time.Microsecond)
		done := make(chan error, 1)
		go func() { _, err := rt.Delete("log", name); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Delete hangs", round)
		}
		if _, ok, _ := store.Record(IDFromName("log", name).String()); ok {
			t.Fatalf("round %d: record remains", round)
		}
		if n := store.OpenHandles(); n != 0 {
			// other rooms are all deleted: nothing may stay open
			t.Fatalf("round %d: %d handles open after Delete", round, n)
		}
	}
	t.Logf("%+v", rt.Stats())
}

func TestStressShutdownVsTraffic(t *testing.T) {
	for round := range 30 {
		k := &logKind{}
		rt, _, fake := fakeRuntime(t, k.kind())
		var socks []*fsock
		for i := range 4 {
			socks = append(socks, join(t, rt, "log", fmt.Sprint("s", i)))
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range socks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					rt.Message(s, true, []byte(strconv.Itoa(j)))
					rt.ServeHTTP(httptestRecorder(), httptestRequest(), "log", fmt.Sprint("n", i, j%3))
					if j%4 == 0 {
						fake.Advance(61 * time.Second)
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		go func() { _, _ = rt.Delete("log", "s1") }()
		ctx := t.Context()
		if err := rt.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		if st := rt.Stats(); st.Rooms != 0 {
			t.Fatalf("round %d: after Shutdown %+v", round, st)
		}
	}
}
