//go:build !unix

package broker

import (
	"errors"
	"io/fs"
	"os"
)

// ownedByMe cannot be checked here; the per-user cache directory's ACL
// protects the files.
func ownedByMe(fs.FileInfo) bool { return true }

// openNoFollow refuses a symlink, then opens the file.
func openNoFollow(path string) (*os.File, error) {
	if st, err := os.Lstat(path); err != nil {
		return nil, err
	} else if st.Mode()&fs.ModeSymlink != 0 {
		return nil, errors.New("is a symbolic link")
	}
	return os.Open(path)
}
