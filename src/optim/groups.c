/* groups.c — parameter groups: which parameters a group selects, and the groups of model
 * files (options that override the trainer's, under torch.optim's names). */
#include "train/train.h"

#include <cjson/cJSON.h>
#include <fnmatch.h>

anvil_param_group anvil_param_group_default(const char *match, bool ndim1, const anvil_optimizer_config *base)
{
    anvil_param_group g;
    memset(&g, 0, sizeof g);
    g.match = match;
    g.ndim1 = ndim1;
    g.optimizer = base ? *base : anvil_optimizer_default_config(ANVIL_OPT_ADAM);
    return g;
}

bool anvil_group_selects(const char *match, bool ndim1, const char *name, int ndim)
{
    if (ndim1 && ndim == 1)
        return true;
    if (!match || !name)
        return false;
    /* comma-separated patterns, each matched whole */
    const char *p = match;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char pat[256];
        if (len > 0 && len < sizeof pat) {
            memcpy(pat, p, len);
            pat[len] = '\0';
            if (fnmatch(pat, name, 0) == 0)
                return true;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

anvil_optimizer_config anvil_group_spec_apply(const anvil_group_spec *g, const anvil_optimizer_config *base)
{
    anvil_optimizer_config o = *base;
    const anvil_optimizer_config *v = &g->opt;
    unsigned s = g->set;
    if (s & GO_LR) o.lr = v->lr;
    if (s & GO_MOMENTUM) o.momentum = v->momentum;
    if (s & GO_DAMPENING) o.dampening = v->dampening;
    if (s & GO_NESTEROV) o.nesterov = v->nesterov;
    if (s & GO_WEIGHT_DECAY) o.weight_decay = v->weight_decay;
    if (s & GO_BETAS) o.beta1 = v->beta1, o.beta2 = v->beta2;
    if (s & GO_EPS) o.eps = v->eps;
    if (s & GO_MAXIMIZE) o.maximize = v->maximize;
    if (s & GO_AMSGRAD) o.amsgrad = v->amsgrad;
    if (s & GO_ALPHA) o.alpha = v->alpha;
    if (s & GO_CENTERED) o.centered = v->centered;
    if (s & GO_LR_DECAY) o.lr_decay = v->lr_decay;
    if (s & GO_INITIAL_ACC) o.initial_accumulator_value = v->initial_accumulator_value;
    if (s & GO_RHO) o.rho = v->rho;
    if (s & GO_MOMENTUM_DECAY) o.momentum_decay = v->momentum_decay;
    if (s & GO_DECOUPLED) o.decoupled_weight_decay = v->decoupled_weight_decay;
    return o;
}

typedef struct {
    const char *key;
    unsigned bit;
    size_t offset;   /* of the float or bool in anvil_optimizer_config */
    bool is_bool;
} group_key;

#define FKEY(k, b, f) {k, b, offsetof(anvil_optimizer_config, f), false}
#define BKEY(k, b, f) {k, b, offsetof(anvil_optimizer_config, f), true}
static const group_key KEYS[] = {
    FKEY("lr", GO_LR, lr), FKEY("momentum", GO_MOMENTUM, momentum),
    FKEY("dampening", GO_DAMPENING, dampening), BKEY("nesterov", GO_NESTEROV, nesterov),
    FKEY("weight_decay", GO_WEIGHT_DECAY, weight_decay), FKEY("eps", GO_EPS, eps),
    BKEY("maximize", GO_MAXIMIZE, maximize), BKEY("amsgrad", GO_AMSGRAD, amsgrad),
    FKEY("alpha", GO_ALPHA, alpha), BKEY("centered", GO_CENTERED, centered),
    FKEY("lr_decay", GO_LR_DECAY, lr_decay),
    FKEY("initial_accumulator_value", GO_INITIAL_ACC, initial_accumulator_value),
    FKEY("rho", GO_RHO, rho), FKEY("momentum_decay", GO_MOMENTUM_DECAY, momentum_decay),
    BKEY("decoupled_weight_decay", GO_DECOUPLED, decoupled_weight_decay),
};

/* "params": a pattern string or an array of them, joined with commas. */
static anvil_status parse_params(const char *origin, int index, const cJSON *v, char **out)
{
    size_t len = 1;
    const cJSON *e;
    if (cJSON_IsString(v)) {
        *out = anvil_xstrdup(v->valuestring);
        return *out ? ANVIL_OK : ANVIL_ERR_OOM;
    }
    if (!cJSON_IsArray(v))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: \"params\" must be a pattern or a list of them",
                          origin, index);
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, ','))
            return anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: \"params\" entries must be patterns "
                              "(strings without commas)", origin, index);
        len += strlen(e->valuestring) + 1;
    }
    char *s = anvil_xmalloc(len, "a parameter group");
    if (!s)
        return ANVIL_ERR_OOM;
    s[0] = '\0';
    cJSON_ArrayForEach(e, v) {
        if (s[0])
            strcat(s, ",");
        strcat(s, e->valuestring);
    }
    *out = s;
    return ANVIL_OK;
}

anvil_status anvil_group_spec_parse(const char *origin, int index, const cJSON *obj, anvil_group_spec *out)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(obj))
        return anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d] must be an object", origin, index);
    const cJSON *item;
    anvil_status st = ANVIL_OK;
    cJSON_ArrayForEach(item, obj) {
        const char *k = item->string;
        if (strcmp(k, "params") == 0) {
            st = parse_params(origin, index, item, &out->match);
        } else if (strcmp(k, "ndim1") == 0) {
            if (!cJSON_IsBool(item))
                st = anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: \"ndim1\" must be true or false", origin, index);
            out->ndim1 = cJSON_IsTrue(item);
        } else if (strcmp(k, "betas") == 0) {
            if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(item, 0)) ||
                !cJSON_IsNumber(cJSON_GetArrayItem(item, 1)))
                st = anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: \"betas\" must be [beta1, beta2]", origin, index);
            else {
                out->opt.beta1 = (float)cJSON_GetArrayItem(item, 0)->valuedouble;
                out->opt.beta2 = (float)cJSON_GetArrayItem(item, 1)->valuedouble;
                out->set |= GO_BETAS;
            }
        } else {
            size_t i = 0;
            while (i < sizeof KEYS / sizeof KEYS[0] && strcmp(KEYS[i].key, k) != 0)
                i++;
            if (i == sizeof KEYS / sizeof KEYS[0])
                st = anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: unknown option \"%s\" (params, ndim1, lr, "
                                "momentum, dampening, nesterov, weight_decay, betas, eps, maximize, amsgrad, alpha, "
                                "centered, lr_decay, initial_accumulator_value, rho, momentum_decay, "
                                "decoupled_weight_decay)", origin, index, k);
            else if (KEYS[i].is_bool ? !cJSON_IsBool(item) : !cJSON_IsNumber(item))
                st = anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d]: \"%s\" must be %s", origin, index, k,
                                KEYS[i].is_bool ? "true or false" : "a number");
            else {
                char *f = (char *)&out->opt + KEYS[i].offset;
                if (KEYS[i].is_bool)
                    *(bool *)f = cJSON_IsTrue(item);
                else
                    *(float *)f = (float)item->valuedouble;
                out->set |= KEYS[i].bit;
            }
        }
        if (st != ANVIL_OK)
            break;
    }
    if (st == ANVIL_OK && !out->match && !out->ndim1)
        st = anvil_fail(ANVIL_ERR_FORMAT, "%s: param_groups[%d] selects nothing: give \"params\" (patterns) "
                        "and/or \"ndim1\": true", origin, index);
    if (st != ANVIL_OK) {
        free(out->match);
        out->match = NULL;
    }
    return st;
}
