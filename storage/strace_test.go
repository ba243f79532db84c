package storage

import (
	"os"
	"os/exec"
	"testing"
)

// testChild is the command that runs the test func child of this test
// binary alone, with env added to its environment.
func testChild(t *testing.T, child string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// straceChild is testChild run under strace (following threads, quiet)
// with args. The test is skipped without strace.
func straceChild(t *testing.T, child string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace")
	}
	cmd := testChild(t, child, env...)
	cmd.Args = append(append(append([]string{strace, "-f", "-qq"}, args...), cmd.Path), cmd.Args[1:]...)
	cmd.Path = strace
	return cmd
}
