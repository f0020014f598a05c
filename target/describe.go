package target

import "context"

// Describe returns what SSM knows of one instance id (ping status, agent
// version, platform); PingStatus NotRegistered when SSM does not manage
// it. ssmproxy doctor reports it (docs/doctor.md).
func (f *Finder) Describe(ctx context.Context, id string) (Candidate, error) {
	c := &Candidate{ID: id, PingStatus: NotRegistered}
	if err := f.status(ctx, []string{id}, map[string]*Candidate{id: c}); err != nil {
		return Candidate{}, err
	}
	return *c, nil
}
