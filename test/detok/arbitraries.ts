import fc from "fast-check";

/** One code point of each UTF-8 length equally often (surrogates excluded: they are not characters). */
export const anyChar = fc
  .oneof(
    fc.integer({ min: 0, max: 0x7f }),
    fc.integer({ min: 0x80, max: 0x7ff }),
    fc.integer({ min: 0x800, max: 0xffff }).filter((c) => c < 0xd800 || c > 0xdfff),
    fc.integer({ min: 0x10000, max: 0x10ffff }),
  )
  .map((c) => String.fromCodePoint(c));

export const isWellFormed = (text: string): boolean => text.isWellFormed();
