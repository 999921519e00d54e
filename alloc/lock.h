/* The pool lock: a futex mutex (Drepper's "mutex2") that spins a little
 * before it sleeps. Uncontended, a lock + unlock is two atomic operations
 * (pthread_mutex_lock/unlock cost ~110 instructions here, half the cached
 * alloc+free pair); contended, a waiter spins briefly (the pool's critical
 * sections are short) and then sleeps in the kernel, so two threads on one
 * pool do not collapse into futex ping-pong on every operation. The pool's
 * slow paths can hold it for milliseconds (waiting for a stream), which is
 * why waiters sleep rather than spin forever. */
#ifndef CK_LOCK_H
#define CK_LOCK_H

#include <stdatomic.h>

typedef struct ck_lock {
    _Atomic int v; /* 0 free, 1 held, 2 held with sleepers */
} ck_lock;

void ck__lock_slow(ck_lock *l);
void ck__lock_wake(ck_lock *l);

static inline void ck_lock_init(ck_lock *l) { atomic_init(&l->v, 0); }

static inline void ck_lock_acquire(ck_lock *l) {
    int c = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        ck__lock_slow(l);
}

static inline void ck_lock_release(ck_lock *l) {
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2) ck__lock_wake(l);
}

#endif
