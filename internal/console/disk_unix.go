//go:build unix

package console

import "golang.org/x/sys/unix"

// diskSpace is the free (for unprivileged users) and total bytes of the
// file system holding dir; zeros when unknown.
func diskSpace(dir string) (free, total uint64) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, 0
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize)
}
