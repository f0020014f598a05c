package keyring

// The file backend encrypts with github.com/dvsekhvalnov/jose2go. keyring
// v1.2.2 asks for v1.5.0, which is affected by CVE-2025-63811 (a JWE
// decompression bomb, fixed in v1.8.0). go.mod requires v1.11.0; this import
// makes that a direct requirement, so "go mod tidy" keeps it in the main
// require block where reviewers see it, instead of an easily dropped
// "// indirect" line.
import _ "github.com/dvsekhvalnov/jose2go"
