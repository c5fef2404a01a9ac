//go:build !unix

package node

// openFilesLimit is 0 (unknown) where the open-files limit is unknown.
func openFilesLimit() int { return 0 }

// restrictFiles does nothing where there is no umask.
func restrictFiles() {}
