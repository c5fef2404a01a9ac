//go:build unix

package node

import "syscall"

// connectionLimit is how many WebSocket connections this process can hold
// while keeping 1024 file descriptors for its log, store and HTTP clients.
// (Go raises the soft open-files limit to the hard one at start.)
func connectionLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return max(int(r.Cur)-1024, 64)
}
