//go:build !unix

package lockfile

import "io/fs"

// noFollow: Windows has no O_NOFOLLOW; the directory checks stand alone.
const noFollow = 0

// owner cannot be told from fs.FileInfo here; the per-user profile
// directory's ACL keeps other users out.
func owner(fs.FileInfo) (uid int, mine bool) { return -1, true }

// checkModes: Windows mode bits do not describe access by others.
const checkModes = false
