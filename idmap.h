/*
 * idmap.h: a map from positive int ids (libvirt watch and timer numbers)
 * to pointers.
 *
 * Open addressing with linear probing: lookups touch one or two cache
 * lines whatever the number of entries, and there is no allocation per
 * entry.  Keys are > 0; 0 marks an empty slot.  Deletion moves the later
 * entries of the probe run back instead of leaving a marker, so a map
 * whose ids keep changing (every add gets a new one) never fills up with
 * markers and never has to be rebuilt at the same size.  The memory comes
 * from Perl's allocator, which needs no interpreter context, so libvirt's
 * trampolines may use it too.
 */
#ifndef SVE_IDMAP_H
#define SVE_IDMAP_H

#define SVE_IDMAP_EMPTY 0

typedef struct {
    int *keys;
    void **vals;
    size_t cap;         /* a power of two, or 0 before the first insert */
    unsigned shift;     /* 32 - log2(cap) */
    size_t used;        /* entries */
} sve_idmap;

static inline size_t
sve_idmap_slot(const sve_idmap *map, int id)
{
    /* Fibonacci hashing: the high bits of the product depend on all the
     * bits of the id, so strided ids spread as well as consecutive ones */
    return (size_t)(((uint32_t)id * 2654435761u) >> map->shift);
}

/* The slot holding ID, or the empty slot that ends its probe run. */
static inline size_t
sve_idmap_find(const sve_idmap *map, int id)
{
    size_t i;

    for (i = sve_idmap_slot(map, id);
         map->keys[i] != SVE_IDMAP_EMPTY && map->keys[i] != id;
         i = (i + 1) & (map->cap - 1))
        ;
    return i;
}

static inline void *
sve_idmap_get(const sve_idmap *map, int id)
{
    size_t i;

    if (map->cap == 0 || id <= 0)
        return NULL;
    i = sve_idmap_find(map, id);
    return map->keys[i] == id ? map->vals[i] : NULL;
}

static inline void sve_idmap_put(sve_idmap *map, int id, void *val);

static inline void
sve_idmap_resize(sve_idmap *map, size_t cap)
{
    sve_idmap old = *map;
    size_t i;

    Newxz(map->keys, cap, int);
    Newx(map->vals, cap, void *);
    map->cap = cap;
    for (map->shift = 32; cap > 1; cap >>= 1)
        map->shift--;
    map->used = 0;
    for (i = 0; i < old.cap; i++) {
        if (old.keys[i] != SVE_IDMAP_EMPTY)
            sve_idmap_put(map, old.keys[i], old.vals[i]);
    }
    Safefree(old.keys);
    Safefree(old.vals);
}

/* The caller makes sure that id > 0 and is not in the map yet. */
static inline void
sve_idmap_put(sve_idmap *map, int id, void *val)
{
    size_t i;

    if ((map->used + 1) * 2 > map->cap)     /* at most half full */
        sve_idmap_resize(map, map->cap ? map->cap * 2 : 16);
    i = sve_idmap_find(map, id);
    map->keys[i] = id;
    map->vals[i] = val;
    map->used++;
}

static inline void *
sve_idmap_delete(sve_idmap *map, int id)
{
    size_t mask = map->cap - 1;
    size_t hole, j;
    void *val;

    if (map->cap == 0 || id <= 0)
        return NULL;
    hole = sve_idmap_find(map, id);
    if (map->keys[hole] != id)
        return NULL;
    val = map->vals[hole];
    /* Close the hole: an entry later in the run moves into it unless its
     * own slot lies after the hole (cyclically), where a lookup that
     * starts at that slot would no longer pass the hole to reach it. */
    for (j = (hole + 1) & mask; map->keys[j] != SVE_IDMAP_EMPTY; j = (j + 1) & mask) {
        size_t home = sve_idmap_slot(map, map->keys[j]);

        if (((j - home) & mask) >= ((j - hole) & mask)) {
            map->keys[hole] = map->keys[j];
            map->vals[hole] = map->vals[j];
            hole = j;
        }
    }
    map->keys[hole] = SVE_IDMAP_EMPTY;
    map->used--;
    return val;
}

static inline void
sve_idmap_clear(sve_idmap *map)
{
    Safefree(map->keys);
    Safefree(map->vals);
    map->keys = NULL;
    map->vals = NULL;
    map->cap = map->used = 0;
}

#endif /* SVE_IDMAP_H */
