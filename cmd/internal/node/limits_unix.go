//go:build unix

package node

import "syscall"

// openFilesLimit returns the process's open-files limit, 0 when unknown or
// practically unlimited. (Go raises the soft limit to the hard one at
// start.)
func openFilesLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur)
}

// restrictFiles makes the files and folders this process creates readable
// by its user alone (0600, 0700), whatever the library creating them asks.
func restrictFiles() { syscall.Umask(0o077) }
