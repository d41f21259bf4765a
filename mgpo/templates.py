"""Turn templates as data, and the Qwen chat markup they are rendered into.

The rollout builds token ids itself (turn 2 = turn-1 prompt ids + sampled ids + injected ids), so templates
render plain chat-markup strings for each piece; nothing is ever decoded and re-encoded.
Facts from the MGPO paper (arXiv 2507.05920, sec. 3): turn 1 asks for the key region as JSON and stops;
turn 2 shows the crop (or the original again when the box is invalid) with the question AND the choices.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass
from enum import StrEnum

from mgpo.records import PromptRecord, TaskKind

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
    """The texts of one rollout mode. `{question}`, `{choices}` and `{image_number}` are filled in.

    A follow-up user turn is `intro`, then the new image, then the text: the paper's turn 2 opens with a
    sentence before the image ("Based on the provided coordinates, return the sub-image: <image> ...").
    """

    mode: Mode
    system: str
    first: str  # the first user message, after the image
    after_crop: str  # after the crop image
    after_invalid: str  # after the original image, shown again
    max_crops: int  # 0: single turn
    stop: tuple[str, ...] = BOX_STOP
    crop_intro: str = ""  # before the crop image
    invalid_intro: str = ""  # before the original image, shown again


# The paper's texts, word for word (arXiv 2507.05920: Figure 2, the template; Figure 8, a full conversation
# of the released model; README, the GRPO post-prompt). The reference code itself could not be read here, so
# where the figures flatten whitespace, a piece boundary is one "\n". "Out the coordinates" is the paper's
# own wording in both figures and is kept: a released MGPO checkpoint was trained on it. The letters
# "(A, B, C, D, or E)" are fixed, whatever the number of options, as in the paper.
PAPER_ANSWER = "provide the final answer (A, B, C, D, or E) enclosed within \\boxed{{}}."
PAPER_CHOICES = "Question: {question}\nThe choices are listed below:\n{choices}\n"
MGPO = Template(
    mode=Mode.MGPO,
    system=(
        "You are a helpful assistant. Given an image and one question. First, identify the coordinates of the "
        "key image area relevant to solving the problem. Append the coordinates in JSON format at the end of "
        "your response and stop. This will trigger cropping of the corresponding area in the original image "
        "and enlarge it for improved clarity. Once the enlarged image is available, provide the final answer "
        "(A, B, C, D, or E) enclosed within \\boxed{}."
    ),
    first="Question: {question}\nOut the coordinates of the key image area relevant to the problem in JSON format.",
    crop_intro="Based on the provided coordinates, return the sub-image: ",
    after_crop=(
        PAPER_CHOICES + "Carefully analyze both the original image and the enlarged sub-image to solve the "
        "question step by step. If the sub-image does not provide sufficient information, refer to the "
        "original image to find the solution. Present your reasoning clearly, and " + PAPER_ANSWER
    ),
    invalid_intro="Not providing correct coordinates or invalid coordinate values, return the original image: ",
    after_invalid=(
        PAPER_CHOICES
        + "Carefully analyze the original image to solve the question step by step. Present your "
        "reasoning clearly, and " + PAPER_ANSWER
    ),
    max_crops=1,
)

# The paper's baseline: one turn, the question and its post-prompt (Qwen's default system prompt).
GRPO = Template(
    mode=Mode.GRPO,
    system="You are a helpful assistant.",
    first=(
        "{question}\nThe choices are listed below:\n{choices}\nOutput the coordinates of the key image area "
        "relevant to the problem in JSON format. And put the answer letter (A, B, C, D, or E) within \\boxed{{}}."
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


# Not in the paper: the box's JSON shape shown at the end of the turn-1 text. The paper's 7B knows Qwen's
# grounding format from pre-training; a model that does not can copy it from the prompt (rollout.box_hint).
BOX_HINT = '\n```json\n[{{"bbox_2d": [x1, y1, x2, y2], "label": "key image area"}}]\n```'


def with_box_hint(template: Template) -> Template:
    """`template` with BOX_HINT after its turn-1 text (the two-turn and single-turn templates only)."""
    if template.mode is Mode.MULTITURN:
        raise ValueError("box_hint is for the mgpo and grpo templates; multiturn states its own JSON")
    return dataclasses.replace(template, first=template.first + BOX_HINT)


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


def user_turn(text: str, n_images: int, intro: str = "") -> str:
    """A user turn: `n_images` images, with `intro` just before the last one, then `text`."""
    before = IMAGE_PLACEHOLDER * (n_images - 1) + intro if n_images else intro
    return f"{IM_START}user\n{before}{IMAGE_PLACEHOLDER * min(n_images, 1)}{text}{IM_END}\n"


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
    intro, text = (
        (template.crop_intro, template.after_crop)
        if valid
        else (
            template.invalid_intro,
            template.after_invalid,
        )
    )
    text = text.format(question=question, choices=format_choices(choices), image_number=image_number)
    # Qwen's chat format has "\n" after every <|im_end|>; the model samples only the <|im_end|> itself.
    close = "\n" if reply_closed else f"{IM_END}\n"
    return close + user_turn(text, 1, intro) + ASSISTANT_START


def single_prompt(
    text: str, n_images: int, system: str = "You are a helpful assistant.", intro: str = ""
) -> str:
    """A one-turn prompt (counting, multi-image grounding, recognition) with `n_images` images first
    (`intro` just before the last one)."""
    return system_turn(system) + user_turn(text, n_images, intro) + ASSISTANT_START


def opening_prompt(record: PromptRecord, template: Template) -> str:
    """The first prompt of a record's rollout: the mode's template for multiple choice, else the one-turn
    counting or grounding prompt with every image of the record first."""
    if record.kind is TaskKind.MULTIPLE_CHOICE:
        return first_prompt(template, record.question, record.choices)
    task_prompt = COUNTING_PROMPT if record.kind is TaskKind.COUNTING else GROUNDING_PROMPT
    return single_prompt(task_prompt.format(question=record.question), len(record.images))
