"""Turn templates as data, and the Qwen chat markup they are rendered into.

The rollout builds token ids itself (turn 2 = turn-1 prompt ids + sampled ids + injected ids), so templates
render plain chat-markup strings for each piece; nothing is ever decoded and re-encoded.
Facts from the MGPO paper (arXiv 2507.05920, sec. 3): turn 1 asks for the key region as JSON and stops;
turn 2 shows the crop (or the original again when the box is invalid) with the question AND the choices.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import StrEnum

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
ASSISTANT_START = f"{IM_START}assistant\n"
# Turn 1 ends at the closing fence of the JSON block. A bare "```" would also match the OPENING fence,
# so the stop strings include what precedes the closing one; they are kept in the sampled text.
BOX_STOP = ("]\n```", "}\n```", "]```", "}```")
LETTERS = string.ascii_uppercase
# Tokens only the system places: a policy that samples one would claim an image that is not there.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


class Mode(StrEnum):
    """How a multiple-choice prompt is rolled out. Chosen once, at build time."""

    MGPO = "mgpo"  # two turns: ground, then answer with the crop in view
    GRPO = "grpo"  # single turn: box and answer in one reply (the paper's baseline)
    MULTITURN = "multiturn"  # up to K crops, from the original or an earlier crop, or answer at once


@dataclass(frozen=True)
class Template:
    """The texts of one rollout mode. `{question}`, `{choices}` and `{max_crops}` are filled in."""

    mode: Mode
    system: str
    first: str  # the first user message, after the image
    after_crop: str  # comes with the crop image
    after_invalid: str  # comes with the original image again
    max_crops: int  # 0: single turn
    stop: tuple[str, ...] = BOX_STOP


MGPO = Template(
    mode=Mode.MGPO,
    system=(
        "You answer questions about high-resolution images that you see shrunk. First find the region "
        "that holds the answer and end your reply with its pixel coordinates in this image as JSON; then "
        "stop. The system will cut that region from the full-resolution image, enlarge it and show it to "
        "you. Then reason step by step and put the letter of the right option in \\boxed{}."
    ),
    first=(
        "{question}\nWhich region of the image holds the answer? Reply with its coordinates as JSON:\n"
        '```json\n[{{"bbox_2d": [x1, y1, x2, y2], "label": "key region"}}]\n```'
    ),
    after_crop=(
        "Above is the region you chose, cut from the full-resolution image and enlarged.\n"
        "Question: {question}\nOptions:\n{choices}\n"
        "Reason step by step, then put the letter of the right option in \\boxed{{}}."
    ),
    after_invalid=(
        "Those coordinates are not a valid region of the image, so here is the whole image again.\n"
        "Question: {question}\nOptions:\n{choices}\n"
        "Reason step by step, then put the letter of the right option in \\boxed{{}}."
    ),
    max_crops=1,
)

GRPO = Template(
    mode=Mode.GRPO,
    system="You answer questions about images.",
    first=(
        "{question}\nOptions:\n{choices}\nFirst give the coordinates of the key region as JSON "
        '```json\n[{{"bbox_2d": [x1, y1, x2, y2], "label": "key region"}}]\n```\n'
        "then put the letter of the right option in \\boxed{{}}."
    ),
    after_crop="",
    after_invalid="",
    max_crops=0,
    stop=(),
)


def multiturn(max_crops: int) -> Template:
    """The autonomous template: the model may look closer up to `max_crops` times, or answer directly."""
    if max_crops < 1:
        raise ValueError(f"multiturn needs max_crops >= 1, got {max_crops}")
    return Template(
        mode=Mode.MULTITURN,
        system=(
            "You answer questions about high-resolution images that you see shrunk. You may look closer up "
            f"to {max_crops} times: end your reply with JSON "
            '```json\n{"bbox_2d": [x1, y1, x2, y2], "image": N}\n```\n'
            "where N is the number of the image to cut from (1 is the original, 2 and up are earlier "
            "crops) and the coordinates are pixels of that image; then stop and you will see the region "
            "enlarged. When you can answer, put the letter of the right option in \\boxed{}."
        ),
        first="{question}\nOptions:\n{choices}",
        after_crop="Image {image_number}: the region you chose, enlarged. Look closer again or answer.",
        after_invalid="Those coordinates are not a valid region of that image. Look again or answer.",
        max_crops=max_crops,
    )


COUNTING_PROMPT = (
    "{question}\nPoint at every one of them as JSON "
    '```json\n[{{"point_2d": [x, y]}}, ...]\n```\n'
    "in pixel coordinates of the image, then put the count in \\boxed{{}}."
)
GROUNDING_PROMPT = (
    "{question}\nThink inside <think></think>, then give the image number and the box of the target "
    'in that image\'s pixel coordinates as <answer>{{"image": N, "bbox_2d": [x1, y1, x2, y2]}}</answer>.'
)


def template_for(mode: Mode, max_crops: int = 1) -> Template:
    """The multiple-choice template of `mode` (`max_crops` only matters for multiturn)."""
    if mode is Mode.MULTITURN:
        return multiturn(max_crops)
    return {Mode.MGPO: MGPO, Mode.GRPO: GRPO}[mode]


def format_choices(choices: tuple[str, ...] | list[str]) -> str:
    """'(A) first\\n(B) second ...'."""
    return "\n".join(f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices))


def system_turn(text: str) -> str:
    return f"{IM_START}system\n{text}{IM_END}\n"


def user_turn(text: str, n_images: int) -> str:
    return f"{IM_START}user\n{IMAGE_PLACEHOLDER * n_images}{text}{IM_END}\n"


def first_prompt(template: Template, question: str, choices: tuple[str, ...]) -> str:
    """System turn + first user turn (one image) + the assistant header: the turn-1 prompt text."""
    user = template.first.format(question=question, choices=format_choices(choices))
    return system_turn(template.system) + user_turn(user, 1) + ASSISTANT_START


def followup(
    template: Template,
    question: str,
    choices: tuple[str, ...],
    valid: bool,
    reply_closed: bool,
    image_number: int = 2,
) -> str:
    """The injected text after an assistant turn: close it (unless the model emitted <|im_end|> itself),
    a user turn with one new image (the crop if `valid`, else the original again) and the assistant header.
    """
    text = template.after_crop if valid else template.after_invalid
    text = text.format(question=question, choices=format_choices(choices), image_number=image_number)
    # Qwen's chat format has "\n" after every <|im_end|>; the model samples only the <|im_end|> itself.
    close = "\n" if reply_closed else f"{IM_END}\n"
    return close + user_turn(text, 1) + ASSISTANT_START


def single_prompt(text: str, n_images: int, system: str = "You are a helpful assistant.") -> str:
    """A one-turn prompt (counting, multi-image grounding, recognition) with `n_images` images first."""
    return system_turn(system) + user_turn(text, n_images) + ASSISTANT_START
