/**
 * Prompt text for the engine benchmarks: King James Bible passages (public domain), the register the bundled
 * model was trained on, so its greedy continuations run long instead of ending at once.
 */
import type { Vocabulary } from "../src/detok/Vocabulary.ts";

export const KJV = `Genesis 1
1 In the beginning God created the heaven and the earth.
2 And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.
3 And God said, Let there be light: and there was light.
4 And God saw the light, that it was good: and God divided the light from the darkness.
5 And God called the light Day, and the darkness he called Night. And the evening and the morning were the first day.
6 And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from the waters.
7 And God made the firmament, and divided the waters which were under the firmament from the waters which were above the firmament: and it was so.
8 And God called the firmament Heaven. And the evening and the morning were the second day.
9 And God said, Let the waters under the heaven be gathered together unto one place, and let the dry land appear: and it was so.
10 And God called the dry land Earth; and the gathering together of the waters called he Seas: and God saw that it was good.
11 And God said, Let the earth bring forth grass, the herb yielding seed, and the fruit tree yielding fruit after his kind, whose seed is in itself, upon the earth: and it was so.
12 And the earth brought forth grass, and herb yielding seed after his kind, and the tree yielding fruit, whose seed was in itself, after his kind: and God saw that it was good.
13 And the evening and the morning were the third day.
14 And God said, Let there be lights in the firmament of the heaven to divide the day from the night; and let them be for signs, and for seasons, and for days, and years:
15 And let them be for lights in the firmament of the heaven to give light upon the earth: and it was so.
16 And God made two great lights; the greater light to rule the day, and the lesser light to rule the night: he made the stars also.
17 And God set them in the firmament of the heaven to give light upon the earth,
18 And to rule over the day and over the night, and to divide the light from the darkness: and God saw that it was good.
19 And the evening and the morning were the fourth day.
20 And God said, Let the waters bring forth abundantly the moving creature that hath life, and fowl that may fly above the earth in the open firmament of heaven.
21 And God created great whales, and every living creature that moveth, which the waters brought forth abundantly, after their kind, and every winged fowl after his kind: and God saw that it was good.
22 And God blessed them, saying, Be fruitful, and multiply, and fill the waters in the seas, and let fowl multiply in the earth.
23 And the evening and the morning were the fifth day.
24 And God said, Let the earth bring forth the living creature after his kind, cattle, and creeping thing, and beast of the earth after his kind: and it was so.
25 And God made the beast of the earth after his kind, and cattle after their kind, and every thing that creepeth upon the earth after his kind: and God saw that it was good.
26 And God said, Let us make man in our image, after our likeness: and let them have dominion over the fish of the sea, and over the fowl of the air, and over the cattle, and over all the earth, and over every creeping thing that creepeth upon the earth.
27 So God created man in his own image, in the image of God created he him; male and female created he them.
28 And God blessed them, and God said unto them, Be fruitful, and multiply, and replenish the earth, and subdue it: and have dominion over the fish of the sea, and over the fowl of the air, and over every living thing that moveth upon the earth.
29 And God said, Behold, I have given you every herb bearing seed, which is upon the face of all the earth, and every tree, in the which is the fruit of a tree yielding seed; to you it shall be for meat.
30 And to every beast of the earth, and to every fowl of the air, and to every thing that creepeth upon the earth, wherein there is life, I have given every green herb for meat: and it was so.
31 And God saw every thing that he had made, and, behold, it was very good. And the evening and the morning were the sixth day.

Psalms 23
1 The LORD is my shepherd; I shall not want.
2 He maketh me to lie down in green pastures: he leadeth me beside the still waters.
3 He restoreth my soul: he leadeth me in the paths of righteousness for his name's sake.
4 Yea, though I walk through the valley of the shadow of death, I will fear no evil: for thou art with me; thy rod and thy staff they comfort me.
5 Thou preparest a table before me in the presence of mine enemies: thou anointest my head with oil; my cup runneth over.
6 Surely goodness and mercy shall follow me all the days of my life: and I will dwell in the house of the LORD for ever.

John 1
1 In the beginning was the Word, and the Word was with God, and the Word was God.
2 The same was in the beginning with God.
3 All things were made by him; and without him was not any thing made that was made.
4 In him was life; and the life was the light of men.
5 And the light shineth in darkness; and the darkness comprehended it not.
`;

/** Openings of short prompts; the benchmarks cycle through them so concurrent streams differ. */
export const SHORT_PROMPTS = [
  "Genesis 1\n1 In the beginning",
  "John 3\n16 For God so loved",
  "Psalms 23\n1 The LORD",
  "Exodus 20\n1 And God spake",
  "Matthew 5\n3 Blessed are the poor",
  "Proverbs 3\n5 Trust in the LORD",
  "Isaiah 40\n31 But they that wait",
  "Romans 8\n28 And we know that",
];

/** Exactly `length` token ids of KJV text (repeated as needed), starting `offset` tokens in. */
export function longPromptTokens<T extends number>(
  tokenize: (text: string) => readonly T[],
  length: number,
  offset = 0,
): T[] {
  const ids = tokenize(KJV);
  const out: T[] = [];
  for (let i = 0; out.length < length; i++) out.push(ids[(offset + i) % ids.length]!);
  return out;
}

/**
 * Greedy longest-match tokenization over a vocabulary, without loading a model: real token ids whose
 * detokenized text is exactly `text`, for scripted-engine workloads.
 */
export function greedyTokenize(vocabulary: Vocabulary, text: string): number[] {
  const byText = new Map<string, number>();
  let longest = 1;
  for (let id = 0; id < vocabulary.size; id++) {
    const piece = vocabulary.textOf(id);
    if (piece === undefined || piece === "" || vocabulary.isSpecial(id)) continue;
    if (!byText.has(piece)) byText.set(piece, id);
    longest = Math.max(longest, piece.length);
  }
  const ids: number[] = [];
  for (let at = 0; at < text.length; ) {
    let length = Math.min(longest, text.length - at);
    while (length > 1 && !byText.has(text.slice(at, at + length))) length--;
    const id = byText.get(text.slice(at, at + length));
    if (id === undefined) throw new Error(`no token for ${JSON.stringify(text[at])}`);
    ids.push(id);
    at += length;
  }
  return ids;
}
