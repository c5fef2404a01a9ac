//go:build unix

package main

import "syscall"

// raiseNoFile raises the open-files limit (RLIMIT_NOFILE) so that want
// descriptors fit: the soft limit up to the hard one, and the hard one too
// when the process may (as root). It returns the limits in force.
func raiseNoFile(want uint64) (soft, hard uint64) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0
	}
	if r.Cur >= want {
		return r.Cur, r.Max
	}
	if r.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want, want
		}
	}
	up := syscall.Rlimit{Cur: r.Max, Max: r.Max}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
		r = up
	}
	return r.Cur, r.Max
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
