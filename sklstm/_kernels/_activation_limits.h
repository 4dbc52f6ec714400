/* The clamp of exp's argument in the gate activations (_activations.pxd).
 *
 * Why the limits are variables defined in another file
 * (_activation_limits.c) and not literals: GCC turns a clamp to a literal,
 * ``if (a > 80) a = 80``, into compares and blends (three compares, an and
 * and two blends for sigmoid's two clamps, after it had folded sigmoid(+-80)
 * into constants), because it puts the literal second in the comparison, a form
 * that x86's min/max instructions do not match. With a value it cannot
 * see, the same C, ``if (limit < a) a = limit``, compiles to one vminps
 * (and ``if (a < -limit) a = -limit`` to one vmaxps), whose operand order
 * keeps a NaN argument: minps(limit, a) returns a when either is NaN. The
 * results are the same bit for bit; a float32 sigmoid over an array took
 * 0.50 -> 0.40 ns per value, tanh 0.56 -> 0.53 (AVX2, Zen 3). A build with
 * link-time optimisation may see the values again and go back to the
 * blends: slower, the same results.
 *
 * const: the compiler loads each limit once per loop and keeps it in a
 * register, as a store through a float pointer cannot change it. */
#ifndef SKLSTM_ACTIVATION_LIMITS_H
#define SKLSTM_ACTIVATION_LIMITS_H

#if defined(__GNUC__)
#define SKLSTM_HIDDEN __attribute__((visibility("hidden")))
#else
#define SKLSTM_HIDDEN
#endif

/* exp(-a) stays a normal number for |a| up to these, so neither the
 * result nor the bits of 2**-k built from k = round(a / ln2) overflow. */
extern SKLSTM_HIDDEN const float sklstm_exp_arg_limit_f;   /* 80 */
extern SKLSTM_HIDDEN const double sklstm_exp_arg_limit_d;  /* 700 */

#endif
