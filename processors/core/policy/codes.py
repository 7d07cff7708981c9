"""The error codes the gate emits, in precedence order, with what each one tells a person."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    meta_error_code: int | None
    retryable: bool
    reason: str


# Precedence order: the first that fires is the error_code.
CODES: tuple[Code, ...] = (
    Code("INVALID_RECIPIENT", None, False,
         "The recipient is neither a valid phone number nor a valid WhatsApp user ID (BSUID), so "
         "WhatsApp cannot deliver to it; check the recipient."),
    Code("RECIPIENT_REGION_UNSUPPORTED", None, False,
         "WhatsApp Business messages cannot be sent to recipients in this country."),
    Code("BSUID_RECIPIENT_UNSUPPORTED", 131062, False,
         "Authentication templates cannot be sent to a customer known only by their WhatsApp "
         "user ID; send it to the customer's phone number."),
    Code("TEMPLATE_DISABLED", 132016, False,
         "Meta has disabled this template, so it can no longer be sent; use another template."),
    Code("TEMPLATE_PAUSED", 132015, True,
         "Meta has paused this template for low quality; try again later or use another template."),
    Code("TEMPLATE_NOT_APPROVED", 132001, False,
         "This template is not approved by Meta (pending, rejected or deleted), so it cannot be "
         "sent."),
    Code("TEMPLATE_ARCHIVED", None, False,
         "Meta archived this template because it was not used for 12 months; unarchive it in "
         "WhatsApp Manager or use another template."),
    Code("OUTSIDE_SERVICE_WINDOW", 131047, False,
         "The customer has not written in the last 24 hours, so only a template message can be "
         "sent now."),
    Code("BULK_MARKETING_NOT_ALLOWED", None, False,
         "Marketing templates may not be sent through bulk or mass actions."),
    Code("MARKETING_OPTED_OUT", 131050, False,
         "The customer has stopped marketing messages from this business; do not send them "
         "marketing."),
    Code("MARKETING_PAUSED_US", 131049, False,
         "Meta does not deliver marketing templates to US phone numbers; use a utility or "
         "authentication template, or another channel."),
    Code("USER_IN_MARKETING_EXPERIMENT", 130472, False,
         "Meta is holding marketing messages back from this customer as part of an "
         "experiment, so this marketing template would not be delivered; use a utility "
         "message or another channel."),
    Code("USER_MARKETING_TEMPLATE_LIMIT", 131049, True,
         "This customer has reached Meta's limit on marketing messages; sending again too soon "
         "can block them for longer, so wait until the retry time."),
    Code("PAIR_RATE_LIMITED", 131056, True,
         "Too many messages to this customer from this business number in a short time; wait "
         "until the retry time."),
    # Decided after the others, with the tenant's open slots (processors.core.policy.
    # messaging_limit); Meta gives no error code: it just does not deliver the excess.
    Code("MESSAGING_LIMIT_REACHED", None, True,
         "The business has reached the number of new customer conversations Meta allows in 24 "
         "hours (its messaging limit); this customer can be messaged after the retry time."),
)

BY_CODE = {entry.code: entry for entry in CODES}
RULE_CODES = tuple(entry.code for entry in CODES)
