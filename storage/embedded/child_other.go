//go:build !linux

package embedded

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// childAttr: only Linux can have a child killed with its parent; elsewhere
// the pid file (killOrphan) cleans up at the next start.
func childAttr() *syscall.SysProcAttr { return nil }

// inspect asks ps about a process; false when there is none.
func inspect(pid int) (proc, bool) {
	out, err := exec.Command("ps", "-o", "ppid=,stat=,command=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return proc{}, false
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return proc{}, false
	}
	var p proc
	p.ppid, _ = strconv.Atoi(f[0])
	p.zombie = strings.HasPrefix(f[1], "Z")
	p.cmdline = strings.Join(f[2:], " ")
	return p, true
}
