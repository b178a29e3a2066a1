/*
 * route.h
 *		Routing policies, the routing decision, and the queue, shared by
 *		policy.c, route.c, route_trigger.c and queue.c.
 */
#ifndef ROUTE_H
#define ROUTE_H

#include "triage.h"

/* A routing policy, as read from triage.policies */
typedef struct Policy
{
	MemoryContext context;		/* holds the policy; deleted when it is read again */
	char		name[NAMEDATALEN];
	Oid			owner;			/* who may use it, besides its grantees */
	int			ngrantees;
	Oid		   *grantees;		/* triage.policy_grants */
	char		model[NAMEDATALEN];	/* the classifier; "" for an extraction policy */
	char		extractor[NAMEDATALEN]; /* "" when there is none */
	float4		default_threshold;
	int			nthresholds;	/* per-label thresholds, by label name */
	char	  **threshold_labels;
	float4	   *threshold_values;
	int32		max_length;		/* -1: no such rule */
	int32		min_length;
	text	   *escalate_if_matches;	/* NULL: no such rule */
	text	   *escalate_unless_matches;
	float4		audit_rate;
	int			nrequired;		/* fields that must be found */
	char	  **required_fields;
	float4		min_field_confidence;	/* -1: no such rule */

	/* the thresholds by label index of the model last used (a freed model's
	 * address may be reused: its load serial tells) */
	uint64		labels_model_serial;	/* the CachedModel's serial; 0: none yet */
	float4	   *label_threshold;
	bool	   *label_has_own;
} Policy;

/* One call site's policy and model */
typedef struct RouteState
{
	uint64		policy_generation;
	Policy	   *policy;
	MemoryContext context;		/* the call site's: holds the policy */
	ModelRef	model_ref;
	ModelRef	extractor_ref;
	TupleDesc	tupdesc;		/* triage.decision, for route() */
} RouteState;

/* What route decided for one input */
typedef struct RouteResult
{
	CachedModel *model;			/* the classifier, or NULL */
	CachedModel *extractor;		/* the extractor, or NULL */
	int32		label;			/* index into the model's labels, -1: none */
	float4		confidence;		/* the label's, or the least of the fields' */
	Jsonb	   *fields;			/* what the extractor found, or NULL */
	bool		escalate;
	char	   *reason;			/* NULL when the caller did not ask for it */
} RouteResult;

/* Where an escalation's answer goes: an attached table's row and columns */
typedef struct AnswerTarget
{
	Oid			relid;
	const char *key_column;
	const char *input_column;
	const char *output_column;
	const char *provenance_column;	/* NULL: none */
} AnswerTarget;

/* policy.c */
extern void PolicyInit(void);
extern Policy *RoutePolicy(RouteState *state, const char *name, int len);
extern void CheckPolicyUse(Policy *policy, Oid role);
extern void ResolveLabelThresholds(Policy *policy, CachedModel *model);

/* route.c */
extern void RouteInput(RouteState *state, Policy *policy, text *input, bool describe,
					   RouteResult *result);

/* queue.c */
extern void QueueInit(void);
extern Datum KeyText(Oid output_func, Datum key);
extern void CheckAnswerTarget(const AnswerTarget *target, Policy *policy);
extern int64 QueueEscalation(Policy *policy, const AnswerTarget *target, text *input,
							 Datum key_text, Jsonb *small_answer, const char *reason);

#endif
