package keyring

import kr "github.com/99designs/keyring"

// keyctlPerm lets the possessor and the user do everything and nobody else
// anything. The kernel's default (possessor only) fails for processes that
// do not possess the user keyring through their session keyring.
func keyctlPerm() uint32 { return kr.GetPermissions(kr.KEYCTL_PERM_ALL, kr.KEYCTL_PERM_ALL, 0, 0) }
