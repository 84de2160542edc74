/*
 * idmap.h: a map from positive int ids (libvirt watch and timer numbers)
 * to pointers.
 *
 * Open addressing with linear probing: lookups on the dispatch path touch
 * one or two cache lines whatever the number of entries, and there is no
 * allocation per entry.  Keys are > 0; 0 marks an empty slot and -1 a
 * deleted one.  The memory comes from Perl's allocator, which needs no
 * interpreter context, so libvirt's trampolines may use it too.
 */
#ifndef SVE_IDMAP_H
#define SVE_IDMAP_H

#define SVE_IDMAP_EMPTY 0
#define SVE_IDMAP_DELETED (-1)

typedef struct {
    int *keys;
    void **vals;
    size_t cap;         /* a power of two, or 0 before the first insert */
    unsigned shift;     /* 32 - log2(cap) */
    size_t used;        /* live entries */
    size_t filled;      /* live and deleted entries */
} sve_idmap;

static size_t
sve_idmap_slot(const sve_idmap *map, int id)
{
    /* Fibonacci hashing: the high bits of the product depend on all the
     * bits of the id, so strided ids spread as well as consecutive ones */
    return (size_t)(((uint32_t)id * 2654435761u) >> map->shift);
}

static void *
sve_idmap_get(const sve_idmap *map, int id)
{
    size_t i;

    if (map->cap == 0 || id <= 0)
        return NULL;
    for (i = sve_idmap_slot(map, id); map->keys[i] != SVE_IDMAP_EMPTY;
         i = (i + 1) & (map->cap - 1)) {
        if (map->keys[i] == id)
            return map->vals[i];
    }
    return NULL;
}

static void sve_idmap_put(sve_idmap *map, int id, void *val);

static void
sve_idmap_resize(sve_idmap *map, size_t cap)
{
    sve_idmap old = *map;
    size_t i;

    Newxz(map->keys, cap, int);
    Newx(map->vals, cap, void *);
    map->cap = cap;
    for (map->shift = 32; cap > 1; cap >>= 1)
        map->shift--;
    map->used = map->filled = 0;
    for (i = 0; i < old.cap; i++) {
        if (old.keys[i] > 0)
            sve_idmap_put(map, old.keys[i], old.vals[i]);
    }
    Safefree(old.keys);
    Safefree(old.vals);
}

/* The caller makes sure that id > 0 and is not in the map yet. */
static void
sve_idmap_put(sve_idmap *map, int id, void *val)
{
    size_t i;

    if ((map->filled + 1) * 2 > map->cap) {
        size_t cap = map->cap ? map->cap : 16;
        /* grow only when live entries need it; otherwise just drop the
         * deleted markers by rehashing at the same size */
        while ((map->used + 1) * 4 > cap)
            cap *= 2;
        sve_idmap_resize(map, cap);
    }
    for (i = sve_idmap_slot(map, id); map->keys[i] > 0;
         i = (i + 1) & (map->cap - 1))
        ;
    if (map->keys[i] == SVE_IDMAP_EMPTY)
        map->filled++;
    map->keys[i] = id;
    map->vals[i] = val;
    map->used++;
}

static void *
sve_idmap_delete(sve_idmap *map, int id)
{
    size_t i;

    if (map->cap == 0 || id <= 0)
        return NULL;
    for (i = sve_idmap_slot(map, id); map->keys[i] != SVE_IDMAP_EMPTY;
         i = (i + 1) & (map->cap - 1)) {
        if (map->keys[i] == id) {
            map->keys[i] = SVE_IDMAP_DELETED;
            map->used--;
            return map->vals[i];
        }
    }
    return NULL;
}

static void
sve_idmap_clear(sve_idmap *map)
{
    Safefree(map->keys);
    Safefree(map->vals);
    map->keys = NULL;
    map->vals = NULL;
    map->cap = map->used = map->filled = 0;
}

#endif /* SVE_IDMAP_H */
