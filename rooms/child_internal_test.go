package rooms

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The crash tests of this package and of rooms_test run den in a child,
// a Test func of this test binary that kills itself at the moment under
// test, and then look at what it left on disk.

// KillSelf ends the process at once, as a crash would: no deferred func,
// no clean close of any file.
func KillSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Hour)
}

// RunKilledChild runs test, a Test func of this test binary, as a child
// with env added to its environment, and fails t unless the child ended
// killed by SIGKILL.
func RunKilledChild(t *testing.T, test string, env ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("den was not killed: %s", out)
	}
}
