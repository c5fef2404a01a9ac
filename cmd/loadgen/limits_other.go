//go:build !unix

package main

// raiseNoFile has no open-files limit to raise here; 0 means unknown.
func raiseNoFile(uint64) (soft, hard uint64) { return 0, 0 }

// cpuTime is unknown here.
func cpuTime() float64 { return 0 }
