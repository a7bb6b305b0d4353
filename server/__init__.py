"""promptswap server: one frozen base model, many PEFT prompt tasks in one batch."""
