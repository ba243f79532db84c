package rooms_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// crashAlarms is a kind whose alarms the tests below crash den around:
// POST .../set sets one 300 ms ahead; its constructor sets one when asked
// (ctorAlarm) and none is set; its handler counts its runs in storage and
// sets the next alarm an hour ahead; an Error sets one 300 ms ahead.
type crashAlarms struct {
	rooms.Base
	st    *rooms.State
	fired *atomic.Int32
}

func crashAlarmsKind(fired *atomic.Int32, ctorAlarm bool, afterCtor func()) rooms.Kind {
	return rooms.Kind{Name: "ca", New: func(st *rooms.State) rooms.Handler {
		if _, ok, _ := st.Alarm(); ctorAlarm && !ok {
			_ = st.SetAlarm(st.Now().Add(300 * time.Millisecond))
			if afterCtor != nil {
				afterCtor()
			}
		}
		return &crashAlarms{st: st, fired: fired}
	}}
}

func (c *crashAlarms) Request(w http.ResponseWriter, req *http.Request) error {
	switch {
	case strings.HasSuffix(req.URL.Path, "/set"):
		return c.st.SetAlarm(c.st.Now().Add(300 * time.Millisecond))
	case strings.HasSuffix(req.URL.Path, "/set-later"):
		return c.st.SetAlarm(c.st.Now().Add(2 * time.Second))
	case strings.HasSuffix(req.URL.Path, "/fail"):
		return errors.New("the upstream is down")
	}
	return nil
}

func (c *crashAlarms) Alarm(rooms.AlarmInfo) error {
	v, _, _ := c.st.Storage.Get("runs")
	if err := c.st.Storage.Put("runs", append(v, 'x')); err != nil {
		return err
	}
	c.fired.Add(1)
	return c.st.SetAlarm(c.st.Now().Add(time.Hour))
}

func (c *crashAlarms) Error(_ *rooms.Sock, err error) {
	_ = c.st.SetAlarm(c.st.Now().Add(300 * time.Millisecond))
}

// TestAlarmCrashChild is den, killed where DEN_ALARM_CRASH says.
func TestAlarmCrashChild(t *testing.T) {
	dir, mode := os.Getenv("DEN_ALARM_CRASH_DIR"), os.Getenv("DEN_ALARM_CRASH")
	if dir == "" {
		t.Skip("run by the crash tests")
	}
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var fired atomic.Int32
	cfg := rooms.Config{Store: store}
	switch mode {
	case "in-alarm-commit":
		// Killed after the handler ran, before its batch commits.
		cfg.Kinds = []rooms.Kind{crashAlarmsKind(&fired, false, nil)}
		cfg.CommitHook = func(rooms.ID) error {
			if fired.Load() > 0 {
				rooms.KillSelf()
			}
			return nil
		}
	case "after-constructor":
		// Killed once the constructor has set the alarm.
		cfg.Kinds = []rooms.Kind{crashAlarmsKind(&fired, true, rooms.KillSelf)}
	case "delete":
		// Killed by strace as it deletes the room's database.
		cfg.Kinds = []rooms.Kind{crashAlarmsKind(&fired, false, nil)}
		rt, err := rooms.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rt.Delete("ca", "r")
		t.Fatalf("not killed; Delete: %v", err)
	}
	rt, err := rooms.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/rooms/ca/r/set", nil), "ca", "r")
	time.Sleep(10 * time.Second)
	t.Fatal("not killed")
}

// crashThenRestart runs den until it is killed in mode, then starts it
// again on the same folder and reports whether the room's alarm handler
// runs within 10 s.
func crashThenRestart(t *testing.T, mode string) bool {
	t.Helper()
	dir := t.TempDir()
	rooms.RunKilledChild(t, "TestAlarmCrashChild", "DEN_ALARM_CRASH_DIR="+dir, "DEN_ALARM_CRASH="+mode)
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var fired atomic.Int32
	rt, err := rooms.New(rooms.Config{Store: store, Kinds: []rooms.Kind{crashAlarmsKind(&fired, mode == "after-constructor", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(t.Context())
	return eventually(10*time.Second, func() bool { return fired.Load() > 0 })
}

// eventually reports whether cond holds before d passes.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// den killed while an alarm's handler runs runs it again after the
// restart, though the handler moved the alarm an hour later: the index
// moves only once that batch commits.
func TestAlarmRunsAgainAfterCrashInItsBatch(t *testing.T) {
	if !crashThenRestart(t, "in-alarm-commit") {
		t.Fatal("the alarm whose run the crash lost did not run again after the restart")
	}
}

// An alarm the constructor sets is indexed before it is written: den
// killed right after still fires it after the restart.
func TestAlarmSetInConstructorSurvivesCrash(t *testing.T) {
	if !crashThenRestart(t, "after-constructor") {
		t.Fatal("the alarm the constructor set before the crash never fired")
	}
}

// den killed as it deletes a room, before the room's database is gone,
// finishes the deletion when it starts again: no alarm is left to make
// the room anew.
func TestCrashedDeletionLeavesNoAlarm(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace to kill den at the unlink")
	}
	dir := t.TempDir()
	var fired atomic.Int32
	start := func() (*rooms.Runtime, *storage.Store) {
		store, err := storage.Open(storage.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		rt, err := rooms.New(rooms.Config{Store: store, Kinds: []rooms.Kind{crashAlarmsKind(&fired, false, nil)}})
		if err != nil {
			t.Fatal(err)
		}
		return rt, store
	}
	rt, store := start()
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/rooms/ca/r/set-later", nil), "ca", "r")
	_ = rt.Shutdown(t.Context())
	store.Close()
	if fired.Load() > 0 {
		t.Skip("the alarm fired before den stopped: the machine is too slow for this test")
	}
	id := rooms.IDFromName("ca", "r").String()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unlinkat", "-e", "inject=unlinkat:signal=SIGKILL",
		"-P", filepath.Join(dir, "rooms", id[:2], id+".db"), exe, "-test.run=^TestAlarmCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DEN_ALARM_CRASH_DIR="+dir, "DEN_ALARM_CRASH=delete")
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "not killed") {
		t.Fatalf("den was not killed at the unlink: %v %s", err, out)
	}
	rt, store = start()
	defer store.Close()
	defer rt.Shutdown(t.Context())
	alarms, err := store.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	if len(alarms) > 0 {
		t.Fatalf("the deleted room's alarm is still indexed after the restart: %v", alarms)
	}
	if _, ok, err := store.Record(id); ok || err != nil {
		t.Fatalf("the deleted room is still recorded after the restart (%v)", err)
	}
}

// An alarm set where no batch commits after it (here in Error, after a
// failed request) is indexed and scheduled at once.
func TestAlarmSetInErrorFires(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var fired atomic.Int32
	rt, err := rooms.New(rooms.Config{Store: store, Kinds: []rooms.Kind{crashAlarmsKind(&fired, false, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(t.Context())
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/rooms/ca/r/fail", nil), "ca", "r")
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("the failing request got %d", w.Code)
	}
	if !eventually(10*time.Second, func() bool { return fired.Load() > 0 }) {
		t.Fatal("the alarm Error set never fired")
	}
}
