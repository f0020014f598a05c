package keyring

import (
	"context"
	"slices"
	"sync"
)

// Memory is an in-process Store for tests and for callers that must not
// persist anything. It is safe for concurrent use.
type Memory struct {
	mu    sync.Mutex
	items map[string]Item
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{items: map[string]Item{}} }

// Get returns a copy of the item or ErrNotFound.
func (m *Memory) Get(ctx context.Context, key string) (Item, error) {
	if err := ctx.Err(); err != nil {
		return Item{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.items[key]
	if !ok {
		return Item{}, ErrNotFound
	}
	it.Data = slices.Clone(it.Data)
	return it, nil
}

// Set stores a copy of the item.
func (m *Memory) Set(ctx context.Context, item Item) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	item.Data = slices.Clone(item.Data)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items[item.Key] = item
	return nil
}

// Remove deletes the item.
func (m *Memory) Remove(ctx context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.items, key)
	return nil
}

// Keys lists the keys, sorted.
func (m *Memory) Keys(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.items))
	for k := range m.items {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// Backend is "memory".
func (m *Memory) Backend() string { return "memory" }
