package wire

import "testing"

func TestVersionGreater(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"3.3.1142.0", "2.3.722.0", true}, {"2.3.722.0", "2.3.722.0", false}, {"1.2.804.0", "1.2.331.0", true},
		{"1.2.0.0", "1.2.331.0", false}, {"3.3", "2.3.722.0", false}, {"x.1.2.3", "1.0.0.0", false},
	} {
		if got := VersionGreater(c.a, c.b); got != c.want {
			t.Errorf("%s > %s = %v", c.a, c.b, got)
		}
	}
	if ValidClientVersion("0.3.0") || !ValidClientVersion("1.2.804.0") {
		t.Fatal("ValidClientVersion")
	}
}
