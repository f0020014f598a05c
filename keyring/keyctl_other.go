//go:build !linux

package keyring

// keyctlPerm is unused where there is no kernel keyring.
func keyctlPerm() uint32 { return 0 }
