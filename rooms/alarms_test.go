package rooms_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// alarmy is a kind whose sockets drive its alarm with text commands and
// hear every alarm that fires:
//
//	set:MS     the alarm MS milliseconds from now (negative: in the past)
//	del        no alarm
//	wipe       Storage.DeleteAll
//	fail:1     alarm handlers fail from now on (fail:0: they do not)
//	rearm:MS   the next alarm handler sets a new alarm MS from then
type alarmy struct {
	rooms.Base
	st    *rooms.State
	clock *clock.Fake
	seen  chan rooms.AlarmInfo
}

// attempts hears every alarm handler that runs, also those that fail
// (whose frames are dropped with their writes).
var attempts = make(chan rooms.AlarmInfo, 100)

func alarmyKind(fake *clock.Fake) rooms.Kind {
	return rooms.Kind{Name: "alarmy", New: func(st *rooms.State) rooms.Handler {
		return &alarmy{st: st, clock: fake, seen: attempts}
	}}
}

func (a *alarmy) Message(s *rooms.Sock, _ bool, data []byte) error {
	cmd, arg, _ := strings.Cut(string(data), ":")
	n, _ := strconv.Atoi(arg)
	var err error
	switch cmd {
	case "set":
		err = a.st.SetAlarm(a.clock.Now().Add(time.Duration(n) * time.Millisecond))
	case "del":
		err = a.st.DeleteAlarm()
	case "wipe":
		err = a.st.Storage.DeleteAll()
	case "fail", "rearm":
		err = a.st.Storage.Put(cmd, []byte(arg))
	}
	if err != nil {
		return err
	}
	s.SendText("ok " + string(data))
	return nil
}

func (a *alarmy) Alarm(info rooms.AlarmInfo) error {
	_, set, err := a.st.Alarm()
	if err != nil {
		return err
	}
	if a.st.Name == "r" {
		a.seen <- info
	}
	a.st.Broadcast(true, fmt.Appendf(nil, "alarm at=%d retry=%d isretry=%v unset=%v now=%d",
		info.Scheduled.UnixMilli(), info.RetryCount, info.IsRetry, !set, a.clock.Now().UnixMilli()))
	if b, _, _ := a.st.Storage.Get("fail"); string(b) == "1" {
		return errors.New("alarm handler fails on purpose")
	}
	if b, _, _ := a.st.Storage.Get("rearm"); len(b) > 0 {
		ms, _ := strconv.Atoi(string(b))
		if _, err := a.st.Storage.Delete("rearm"); err != nil {
			return err
		}
		return a.st.SetAlarm(a.clock.Now().Add(time.Duration(ms) * time.Millisecond))
	}
	return nil
}

// alarmNode serves alarmy on a fake clock; start is a whole second.
func alarmNode(t *testing.T, dir string, fake *clock.Fake) *node {
	t.Helper()
	return startNodeSync(t, dir, storage.SyncNormal, rooms.Config{
		Kinds: []rooms.Kind{alarmyKind(fake)}, Clock: fake, Logger: zaptest.NewLogger(t), HibernateAfter: 10 * time.Second, EvictAfter: time.Minute,
	})
}

func newFake() *clock.Fake { return clock.NewFake(time.UnixMilli(1_700_000_000_000)) }

// alarmAt is the admin API's pending alarm of alarmy/name, or 0.
func alarmAt(t *testing.T, n *node, name string) int64 {
	t.Helper()
	info, err := n.rt.Info("alarmy", name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Alarm == nil {
		return 0
	}
	return *info.Alarm
}

func command(t *testing.T, c *websocket.Conn, cmd string) {
	t.Helper()
	send(t, c, cmd)
	if got := read(t, c); got != "ok "+cmd {
		t.Fatalf("%s: %q", cmd, got)
	}
}

// noAlarmYet shows that nothing fired: a command's answer is the next
// frame, and an alarm's broadcast would have come first.
func noAlarmYet(t *testing.T, c *websocket.Conn) {
	t.Helper()
	command(t, c, "noop")
}

func TestAlarmFiresOnTime(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c := n.dial(t, "/rooms/alarmy/a")
	start := fake.Now().UnixMilli()
	command(t, c, "set:5000")
	if got := alarmAt(t, n, "a"); got != start+5000 {
		t.Fatalf("admin API alarm %d, want %d", got, start+5000)
	}
	fake.Advance(4999 * time.Millisecond)
	noAlarmYet(t, c)
	fake.Advance(time.Millisecond)
	want := fmt.Sprintf("alarm at=%d retry=0 isretry=false unset=true now=%d", start+5000, start+5000)
	if got := read(t, c); got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	waitFor(t, "the fired alarm to leave the admin API", func() bool { return alarmAt(t, n, "a") == 0 })
	if st := n.rt.Stats(); st.AlarmsFired != 1 || st.AlarmsPending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAlarmsFireInTimeOrderAcrossRooms(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	conns := map[string]*websocket.Conn{}
	for name, ms := range map[string]int{"a": 3000, "b": 1000, "c": 2000} {
		conns[name] = n.dial(t, "/rooms/alarmy/"+name)
		command(t, conns[name], fmt.Sprintf("set:%d", ms))
	}
	for _, name := range []string{"b", "c", "a"} {
		for _, other := range []string{"a", "b", "c"} {
			if other != name && alarmAt(t, n, other) != 0 {
				noAlarmYet(t, conns[other])
			}
		}
		fake.Advance(time.Second)
		if got := read(t, conns[name]); !strings.HasPrefix(got, "alarm ") {
			t.Fatalf("room %s: %q", name, got)
		}
	}
}

func TestAlarmInThePastFiresAtOnce(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c := n.dial(t, "/rooms/alarmy/p")
	command(t, c, "set:-60000")
	if got := read(t, c); !strings.Contains(got, "retry=0") {
		t.Fatalf("%q", got)
	}
}

func TestAlarmDeletedDoesNotFire(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c := n.dial(t, "/rooms/alarmy/d")
	command(t, c, "set:1000")
	command(t, c, "del")
	if got := alarmAt(t, n, "d"); got != 0 {
		t.Fatalf("admin API alarm %d after del", got)
	}
	command(t, c, "set:2000")
	command(t, c, "wipe")
	if got := alarmAt(t, n, "d"); got != 0 {
		t.Fatalf("admin API alarm %d after DeleteAll", got)
	}
	fake.Advance(time.Minute)
	noAlarmYet(t, c)
	if st := n.rt.Stats(); st.AlarmsFired != 0 {
		t.Fatalf("fired %d", st.AlarmsFired)
	}
}

func TestAlarmRetriesThenDrops(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c := n.dial(t, "/rooms/alarmy/r")
	command(t, c, "fail:1")
	command(t, c, "set:1000")
	fake.Advance(time.Second)
	for retry := 0; retry <= 6; retry++ {
		if got := recv(t, attempts, fmt.Sprintf("attempt %d never ran", retry+1)); got.RetryCount != retry || got.IsRetry != (retry > 0) {
			t.Fatalf("attempt %d: %+v", retry+1, got)
		}
		if retry == 6 {
			break
		}
		failedAt := fake.Now().UnixMilli()
		// The retry is stored with the failed event's batch.
		var next int64
		waitFor(t, "the retry to be scheduled", func() bool { next = alarmAt(t, n, "r"); return next > failedAt })
		wait := time.Duration(next-failedAt) * time.Millisecond
		base := 2 * time.Second << retry
		if wait < base || wait > base+base/4 {
			t.Fatalf("retry %d after %v, want %v plus at most 25%%", retry+1, wait, base)
		}
		fake.Advance(wait - time.Millisecond)
		noAlarmYet(t, c)
		fake.Advance(time.Millisecond)
	}
	waitFor(t, "the alarm to be dropped", func() bool { return n.rt.Stats().AlarmsDropped == 1 })
	if got := alarmAt(t, n, "r"); got != 0 {
		t.Fatalf("alarm %d after the last retry", got)
	}
	if st := n.rt.Stats(); st.AlarmsRetried != 6 || st.AlarmsFired != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAlarmRearmedInHandlerStands(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c := n.dial(t, "/rooms/alarmy/x")
	command(t, c, "rearm:10000")
	command(t, c, "set:1000")
	fake.Advance(time.Second)
	first := read(t, c)
	firedAt := fake.Now().UnixMilli()
	waitFor(t, "the new alarm", func() bool { return alarmAt(t, n, "x") == firedAt+10000 })
	fake.Advance(10 * time.Second)
	if got := read(t, c); !strings.Contains(got, fmt.Sprintf("at=%d retry=0", firedAt+10000)) {
		t.Fatalf("after %q: %q", first, got)
	}
}

func TestAlarmWakesHibernatedRoom(t *testing.T) {
	fake := newFake()
	n := alarmNode(t, t.TempDir(), fake)
	c1 := n.dial(t, "/rooms/alarmy/h")
	c2 := n.dial(t, "/rooms/alarmy/h")
	command(t, c1, "set:60000")
	waitFor(t, "hibernation", func() bool {
		fake.Advance(11 * time.Second)
		info, _ := n.rt.Info("alarmy", "h")
		return info.State == "hibernated"
	})
	// Past the alarm's time: it wakes the room, whose broadcast reaches
	// both sleeping sockets.
	fake.Advance(time.Minute)
	for _, c := range []*websocket.Conn{c1, c2} {
		if got := read(t, c); !strings.HasPrefix(got, "alarm ") {
			t.Fatalf("%q", got)
		}
	}
}

func TestAlarmSurvivesRestart(t *testing.T) {
	fake := newFake()
	dir := t.TempDir()
	n := alarmNode(t, dir, fake)
	c := n.dial(t, "/rooms/alarmy/s")
	command(t, c, "set:30000")
	c.Close()
	n.stop()

	n2 := alarmNode(t, dir, fake)
	if got := alarmAt(t, n2, "s"); got != fake.Now().UnixMilli()+30000 {
		t.Fatalf("after a restart the admin API says %d", got)
	}
	c2 := n2.dial(t, "/rooms/alarmy/s")
	fake.Advance(30 * time.Second)
	if got := read(t, c2); !strings.HasPrefix(got, "alarm ") {
		t.Fatalf("%q", got)
	}
}

// The chat room's schedule command end to end: many messages pending in
// one room arrive when due, in time order, broadcast and in the history
// with "scheduled":true; bad ones get an error.
func TestChatSchedule(t *testing.T) {
	n, fake, _ := sleepyNode(t)
	alice := n.dial(t, "/rooms/chat/sched?user=alice")
	read(t, alice) // history
	read(t, alice) // join
	send(t, alice, `{"type":"schedule","delay_ms":-1,"text":"x"}`)
	if got := read(t, alice); !strings.Contains(got, `"type":"error"`) {
		t.Fatalf("negative delay: %s", got)
	}
	send(t, alice, `{"type":"schedule","text":"x"}`)
	if got := read(t, alice); !strings.Contains(got, `"type":"error"`) {
		t.Fatalf("no delay: %s", got)
	}
	// Scheduled out of order; a plain message after them marks that they
	// are stored (its frame comes once its batch, and theirs, committed).
	start := fake.Now()
	delays := []int{30, 50, 70, 40, 60} // seconds
	for i, d := range delays {
		send(t, alice, fmt.Sprintf(`{"type":"schedule","delay_ms":%d,"text":"in %d s (%d)"}`, d*1000, d, i))
	}
	send(t, alice, `{"type":"message","text":"now"}`)
	if got := read(t, alice); !strings.Contains(got, `"text":"now"`) || strings.Contains(got, "scheduled") {
		t.Fatalf("%s", got)
	}
	bob := n.dial(t, "/rooms/chat/sched?user=bob")
	read(t, bob)
	read(t, bob)
	read(t, alice) // bob joins
	// The room sleeps, 11 s on, before the first is due; the alarm wakes
	// it.
	fake.Advance(11 * time.Second)
	waitFor(t, "the room to sleep", func() bool { return roomState(t, n, "chat", "sched") == "hibernated" })
	for _, d := range []int{30, 40, 50, 60, 70} {
		// Nothing before its time: the auto-response is the next frame.
		send(t, alice, "ping")
		if got := read(t, alice); got != "pong" {
			t.Fatalf("before +%d s: %s", d, got)
		}
		fake.Advance(start.Add(time.Duration(d) * time.Second).Sub(fake.Now()))
		for _, c := range []*websocket.Conn{alice, bob} {
			got := read(t, c)
			if !strings.Contains(got, fmt.Sprintf(`"text":"in %d s`, d)) || !strings.Contains(got, `"scheduled":true`) || !strings.Contains(got, `"user":"alice"`) {
				t.Fatalf("at +%d s: %s", d, got)
			}
		}
	}
	code, body := httpDo(t, "GET", n.url("/rooms/chat/sched/messages"), "")
	if code != 200 || strings.Count(body, `"scheduled":true`) != 5 || !strings.Contains(body, `"text":"now"`) {
		t.Fatalf("history %d %s", code, body)
	}
}

// An alarm a constructor sets is indexed and fires like any other.
func TestAlarmSetInConstructor(t *testing.T) {
	fake := newFake()
	fired := make(chan struct{}, 1)
	kind := rooms.Kind{Name: "early", New: func(st *rooms.State) rooms.Handler {
		if _, ok, _ := st.Alarm(); !ok {
			_ = st.SetAlarm(st.Now().Add(time.Minute))
		}
		return &earlyRoom{fired: fired}
	}}
	n := startNodeSync(t, t.TempDir(), storage.SyncNormal, rooms.Config{Kinds: []rooms.Kind{kind}, Clock: fake})
	n.dial(t, "/rooms/early/e")
	waitFor(t, "the constructor's alarm in the scheduler", func() bool {
		info, _ := n.rt.Info("early", "e")
		return info.Alarm != nil
	})
	fake.Advance(time.Minute)
	recv(t, fired, "the constructor's alarm never fired")
}

type earlyRoom struct {
	rooms.Base
	fired chan struct{}
}

func (e *earlyRoom) Alarm(rooms.AlarmInfo) error {
	e.fired <- struct{}{}
	return nil
}
