import { SutureError } from "../../errors/errors.ts";
import type { ImageSink, ImageSource } from "../../image/source.ts";
import type { ImageReference } from "../../ref/reference.ts";
import type { TransportOptions } from "../index.ts";

// Placeholder until the transport lands; keeps the dispatcher type-checked.
export async function openLayoutSource(
  dir: string,
  tag: string | undefined,
  _options: TransportOptions,
): Promise<ImageSource> {
  throw new SutureError("INTERNAL", "not implemented yet");
}

export async function openLayoutSink(
  dir: string,
  tag: string | undefined,
  _options: TransportOptions,
): Promise<ImageSink> {
  throw new SutureError("INTERNAL", "not implemented yet");
}
