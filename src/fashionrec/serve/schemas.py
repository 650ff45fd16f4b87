"""Request and response bodies of the API (pydantic), with the input limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[\w.\-]{1,128}$"  # customer, article, model and experiment ids
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
K = Annotated[int, Field(ge=1, le=100)]


class Article(BaseModel):
    """An article as shown to a customer: its id, score and whatever display fields exist."""

    model_config = ConfigDict(extra="allow")
    article_id: str
    score: float
    prod_name: str | None = None
    product_type_name: str | None = None
    colour_group_name: str | None = None
    department_name: str | None = None
    price: float | None = None


class Recommendations(BaseModel):
    customer_id: str | None = None
    known_customer: bool | None = None
    article_id: str | None = None
    segment: int | None = None
    model: str
    version: str
    experiment: str | None = None
    arm: str | None = None
    items: list[Article]


class Feedback(BaseModel):
    customer_id: Id
    article_id: Id
    event: Literal["unlike", "click", "purchase"]


class FeedbackAck(BaseModel):
    id: int
    stored: bool = True


Name = Annotated[str, Field(min_length=1, max_length=64)]
# a value of a customers-table column or a preference: short text or a finite number
Value = (
    Annotated[str, Field(max_length=128)]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | None
)


class NewCustomer(BaseModel):
    """Customers-table fields (age, club_member_status, ...) or preferences (department, price
    band) when the retailer has no customers table."""

    attributes: dict[Name, Value] = Field(default_factory=dict, max_length=32)
    k: K = 12


class Experiment(BaseModel):
    name: Id
    kind: Literal["ab", "epsilon", "thompson"]
    arms: list[Id] = Field(min_length=2, max_length=10)
    epsilon: float = Field(0.1, ge=0, le=1)


class ModelInfo(BaseModel):
    serving: str
    history: list[str]
    models: dict[str, list[str]]


class Health(BaseModel):
    status: str
    model: str
    version: str
    dataset: str
    customers: int
    articles: int
    fashionrec: str
    extra: dict[str, Any] = Field(default_factory=dict)
