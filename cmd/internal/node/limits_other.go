//go:build !unix

package node

// connectionLimit is 0 (no limit) where the open-files limit is unknown.
func connectionLimit() int { return 0 }
