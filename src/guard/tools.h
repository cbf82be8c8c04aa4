/* Tool policy (keyless): which tools a caller's model may be given and call,
 * and how many calls one answer may make. A grant's capability
 *
 *   {"models": "anthropic/claude-*",
 *    "tools": {"allow": ["Read", "Grep", "mcp__docs__*"], "deny": ["Bash"], "max_calls": 8}}
 *
 * applies to the models it names (every model without "models"). Every
 * policy that applies is enforced: a tool must be allowed by each (no
 * "allow" list allows every tool) and denied by none; the smallest
 * max_calls wins. Two places enforce it: the request (this file's stage,
 * after the guard: tools the caller declares that policy refuses are taken
 * out of the body before it is forwarded) and the answer (the account
 * stage: a call to a refused tool, or one call more than max_calls, ends
 * the answer there, in the caller's dialect). */
#ifndef KL_TOOLS_H
#define KL_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/arena.h"
#include "core/exchange.h"
#include "pipeline.h"

struct kl_tool_policy {
    const char **allow;         /* globs over tool names; NULL: every tool not denied */
    size_t nallow;
    const char **deny;
    size_t ndeny;
    int64_t max_calls;          /* tool calls one answer may make; -1: no limit */
};

/* What applies to one exchange: every policy of the caller's grants that
 * names its model. */
struct kl_tool_rules {
    const struct kl_tool_policy **v;
    size_t n;
    int64_t max_calls;          /* the smallest, or -1 */
};

/* Read a capability's "tools" object into *out (arena a). 0, or -1 and why
 * (an unknown key is an error: a misspelt "deny" would allow everything). */
int kl_tool_policy_read(const cJSON *v, kl_arena *a, struct kl_tool_policy *out, const char **why);

/* May the model be given, and call, the tool called name? */
bool kl_tools_permitted(const struct kl_tool_rules *r, const char *name);
/* The same for a function in a namespace (ns; NULL for none): allowed when
 * either name is allowed, refused when either is denied. */
bool kl_tools_permitted_in(const struct kl_tool_rules *r, const char *ns, const char *name);
/* Does a deny list refuse name (an allow list aside)? */
bool kl_tools_denied(const struct kl_tool_rules *r, const char *name);

/* Take out of a request body (usage kind k, see account/usage.h) the tool
 * declarations the rules refuse, and what would be left dangling by it:
 * an emptied "tools" list with its tool_choice and parallel_tool_calls
 * (OpenAI), tool_choice (Anthropic), toolConfig (Gemini); names refused
 * from an allowed-tools list. 1 when the body changed (*removed: the names
 * taken out, comma-separated, in a), 0 when it did not, -1 when the request
 * cannot be served without one of them (its tool_choice forces a refused
 * tool): *why says which. */
int kl_tools_edit(const struct kl_tool_rules *r, int k, cJSON *body, kl_arena *a, const char **removed,
                  const char **why);

/* The pipeline stage: finds the rules that apply (ex->tool_rules) and
 * edits the body. */
enum kl_step kl_tools_run(kl_exchange *ex);

#endif
