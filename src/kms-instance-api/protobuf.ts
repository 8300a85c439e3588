/**
 * Just enough proto3 for the dkms-gcs-0.2 messages (`package api` of the
 * instance SDKs): string, bytes and int32 fields, unknown fields skipped, last
 * occurrence wins, default values not written. Every malformation is a
 * `ProtobufError` naming what is wrong, never a crash.
 */

export type FieldType = 'string' | 'bytes' | 'int32';
/** Field name → [field number, type], in field-number order. */
export type Schema = Readonly<Record<string, readonly [number, FieldType]>>;
export type Message = Record<string, string | Buffer | number | undefined>;

export class ProtobufError extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  private at = 0;
  constructor(private readonly bytes: Buffer) {}

  get done(): boolean {
    return this.at >= this.bytes.length;
  }

  varint(): bigint {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.at >= this.bytes.length) throw new ProtobufError('truncated varint');
      const byte = this.bytes[this.at++];
      value |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return value;
    }
    throw new ProtobufError('varint longer than 10 bytes');
  }

  take(count: number): Buffer {
    if (count > this.bytes.length - this.at) throw new ProtobufError('truncated field');
    const out = this.bytes.subarray(this.at, this.at + count);
    this.at += count;
    return out;
  }
}

export function decode(schema: Schema, bytes: Buffer): Message {
  const byNumber = new Map<number, [string, FieldType]>();
  for (const [name, [number, type]] of Object.entries(schema)) byNumber.set(number, [name, type]);
  const message: Message = Object.create(null);
  const reader = new Reader(bytes);
  while (!reader.done) {
    const tag = reader.varint();
    const number = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (number === 0 || number > 536_870_911) throw new ProtobufError('invalid field number');
    const field = byNumber.get(number);
    if (field && wire !== (field[1] === 'int32' ? 0 : 2)) {
      throw new ProtobufError(`field ${field[0]} has wire type ${wire}`);
    }
    switch (wire) {
      case 0: {
        const value = reader.varint();
        if (field) message[field[0]] = Number(BigInt.asIntN(32, value));
        break;
      }
      case 1:
        reader.take(8);
        break;
      case 2: {
        const length = reader.varint();
        if (length > BigInt(bytes.length)) throw new ProtobufError('truncated field');
        const content = reader.take(Number(length));
        if (field) message[field[0]] = field[1] === 'string' ? text(field[0], content) : content;
        break;
      }
      case 5:
        reader.take(4);
        break;
      default:
        throw new ProtobufError(`unsupported wire type ${wire}`);
    }
  }
  return message;
}

function text(name: string, content: Buffer): string {
  try {
    return utf8.decode(content);
  } catch {
    throw new ProtobufError(`field ${name} is not UTF-8`);
  }
}

function varint(value: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return Buffer.from(out);
}

export function encode(schema: Schema, message: Message): Buffer {
  const parts: Buffer[] = [];
  for (const [name, [number, type]] of Object.entries(schema)) {
    const value = Object.hasOwn(message, name) ? message[name] : undefined;
    if (value === undefined || value === '' || value === 0) continue;
    if (type === 'int32') {
      parts.push(varint(BigInt(number << 3)), varint(BigInt(value as number)));
      continue;
    }
    const content = typeof value === 'string' ? Buffer.from(value, 'utf8') : (value as Buffer);
    if (content.length === 0) continue;
    parts.push(varint(BigInt((number << 3) | 2)), varint(BigInt(content.length)), content);
  }
  return Buffer.concat(parts);
}
