//go:build unix

package brokertest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// detach puts cmd in a session of its own, out of reach of signals sent to
// the test's process group (a Ctrl-C).
func detach(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} }

// processAlive reports whether pid is a running process (a zombie counts as
// gone: it no longer serves anything).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) || !procMounted()
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// killProcess sends SIGKILL to pid and waits up to timeout for it to be gone.
func killProcess(pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still alive %v after SIGKILL", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// terminateProcess sends SIGTERM to pid and waits up to timeout for it to
// exit, then kills it.
func terminateProcess(pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			if err := killProcess(pid, 30*time.Second); err != nil {
				return fmt.Errorf("no exit %v after SIGTERM; %w", timeout, err)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
