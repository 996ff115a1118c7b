"""The message a work pool's queue carries: which flow run to execute. Pure pydantic."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from stratoflow.states import now


class RunMessage(BaseModel):
    """Small on purpose: the run itself (parameters, state) is read from the store, so a message
    can never carry a stale copy of it."""

    model_config = ConfigDict(extra="ignore")

    flow_run_id: str = Field(min_length=1)
    deployment_id: str | None = None
    work_pool_name: str
    work_queue_name: str
    scheduled_time: datetime | None = None
    sent_at: datetime = Field(default_factory=now)
