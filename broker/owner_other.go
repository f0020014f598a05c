//go:build !unix

package broker

import "io/fs"

// ownedByMe cannot be checked here; the per-user cache directory's ACL
// protects the files.
func ownedByMe(fs.FileInfo) bool { return true }
